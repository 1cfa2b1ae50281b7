"""The web console in a real browser (Debian's Chromium, headless) against the local runtime.

Each page test runs axe-core (no serious/critical violation) and saves the screenshot the README shows
(docs/console/*.png). Nothing is mocked: the runtime is `python -m infra.local` on its own port.
"""

from __future__ import annotations

import re
import uuid

import pytest
import requests

from tests.e2e.browser import (  # noqa: F401 - fixtures used by name
    ACCESS_TTL_SECONDS,
    PASSWORD,
    Console,
    Page,
    console_fixture,
    page_fixture,
    sign_in,
    sign_up,
)
from tests.integration.webhook_support import Answer, docs_verify, receiving

pytestmark = pytest.mark.e2e


def go(p: object, label: str) -> None:
    """Follow a link of the main navigation."""
    p.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=True).click()  # type: ignore[attr-defined]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def test_console_is_served_with_a_strict_csp_and_only_known_assets(console: Console) -> None:
    r = requests.get(console.url, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self';" in csp and "unsafe-inline" not in csp
    assert "<script>" not in r.text and " style=" not in r.text
    js = requests.get(f"{console.runtime.base}/console/assets/app.js", timeout=5)
    assert js.status_code == 200 and js.headers["Content-Type"].startswith("application/javascript")
    for name in ["..%2Fconsole.py", "nope.js", "APP.JS", "console.py"]:
        assert requests.get(f"{console.runtime.base}/console/assets/{name}", timeout=5).status_code == 404


def test_sign_up_create_a_validation_agent_and_watch_a_task_complete_live(console: Console, page: Page) -> None:
    p = page.page
    sign_up(page, console, unique("ana"))
    page.check_page("overview")

    # GIVEN a validation agent created from the form generated from the type's config schema
    go(p, "Agents")
    p.get_by_role("heading", name="New agent").wait_for()
    assert p.get_by_label("Max Steps").count() == 1  # a field from validation's config_schema
    p.get_by_label("Name").first.fill("checker")
    p.get_by_label("Max Steps").fill("5000")
    p.get_by_role("button", name="Create agent").click()
    p.get_by_role("link", name="checker").wait_for()
    page.check_page("agents")

    # WHEN a task is sent with the type's example input (prefilled)
    go(p, "Tasks")
    p.get_by_label("Title").fill("check an order")
    assert '"payload"' in p.get_by_label("Input (JSON)").input_value()
    loads = len(page.requests)
    p.get_by_role("button", name="Send task").click()

    # THEN the task page turns `completed` by itself (no reload: the document is never requested again),
    # told by the notification WebSocket (GET /status -> websocket_url; polling is only its 15 s safety net)
    p.locator("#task-status [data-status='completed']").wait_for(timeout=30_000)
    # (the page may read `completed` on the `processing` event's refresh, before the `completed` event arrives)
    assert any('"task.status_changed"' in f for f in page.ws_frames), page.ws_frames[:5]
    assert not [r for r in page.requests[loads:] if r[1].endswith("/console")], "the page was reloaded"
    p.get_by_role("heading", name="Output").wait_for()
    assert p.locator("figure.table-wrap figcaption", has_text="errors").count() == 1  # validation errors as a table
    page.check_page("task")

    # and the list shows it, filterable by status
    p.get_by_role("link", name="← Tasks").click()
    p.get_by_label("Status").first.select_option("completed")
    p.get_by_role("button", name="Apply").click()
    p.get_by_role("link", name="check an order").wait_for()
    page.check_page("tasks")

    # the agent's page: edit and deactivate
    go(p, "Agents")
    p.get_by_role("link", name="checker").click()
    p.get_by_role("heading", name="Status").wait_for()
    page.check_page("agent")
    p.locator("#edit-name").fill("checker-2")
    p.get_by_role("button", name="Save").click()
    p.get_by_text("Saved.").wait_for()
    p.get_by_role("button", name="Deactivate").click()
    p.wait_for_url(re.compile("#/agents$"))  # the agent page returns to the list once the change is saved
    p.get_by_role("row", name=re.compile("checker-2")).locator("[data-status='inactive']").wait_for()


def test_api_errors_are_shown_with_their_code(console: Console, page: Page) -> None:
    p = page.page
    p.goto(console.url)
    p.get_by_label("Username or email").fill(unique("nobody"))
    p.locator("#login-password").fill(PASSWORD)
    p.get_by_role("button", name="Sign in").click()
    alert = p.get_by_role("alert")
    alert.wait_for()
    assert re.search(r"^AUTHENTICATION_ERROR invalid username or password", alert.inner_text()), alert.inner_text()
    page.check_page("sign-in")


BAD_DEFINITION = """{"name": "broken", "steps": [
  {"step_id": "check", "agent_type": "validation", "input_data": {"schema": {"type": "object"}, "payload": {}}},
  {"step_id": "gate", "type": "approval", "depends_on": ["nope"]}]}"""


def test_a_workflow_with_an_approval_is_approved_from_the_inbox_and_succeeds(console: Console, page: Page) -> None:
    p = page.page
    sign_up(page, console, unique("wes"))
    go(p, "Agents")
    p.get_by_label("Name").first.fill("checker")
    p.get_by_role("button", name="Create agent").click()
    p.get_by_role("link", name="checker").wait_for()

    # GIVEN an invalid definition THEN the 422's violations are listed at their paths, each reaching its line
    go(p, "Workflows")
    editor = p.get_by_label("Workflow definition (JSON)")
    example = editor.input_value()
    editor.fill(BAD_DEFINITION)
    p.get_by_role("button", name="Create workflow").click()
    violation = p.locator("li[data-path='steps[1].depends_on[0]']")
    violation.wait_for()
    assert "UNKNOWN_DEPENDENCY" in violation.inner_text()
    assert p.locator("svg.dag g.invalid[data-step='gate']").count() == 1  # and marked on the graph
    violation.get_by_role("button").click()
    selected = p.evaluate("() => { const a = document.activeElement; "
                          "return a.value.slice(a.selectionStart, a.selectionEnd); }")
    assert '"nope"' in selected
    page.check_page("workflows")

    # WHEN the example (check -> approval -> final) is created and started
    editor.fill(example)
    p.get_by_role("button", name="Create workflow").click()
    p.get_by_role("button", name="Start run").click()
    p.locator("#run-status [data-status='waiting_approval']").wait_for(timeout=45_000)
    assert p.locator("svg.dag g[data-step='gate'][data-status='waiting_approval']").count() == 1
    page.check_page("run")

    # THEN the inbox shows it, with the payload form from the step's input_schema, and approving it ends the run
    go(p, "Approvals")
    approval = p.get_by_role("group", name=re.compile("Approval gate"))
    approval.get_by_label("reviewer (required)").fill("wes")
    page.check_page("approvals")
    approval.get_by_role("button", name="Approve").click()
    p.get_by_text("Nothing is waiting for a decision.").wait_for(timeout=20_000)
    go(p, "Workflows")
    p.get_by_role("link", name="review").click()
    p.locator("a[href^='#/runs/']").first.click()
    p.locator("#run-status [data-status='succeeded']").wait_for(timeout=45_000)
    assert p.get_by_role("cell", name=re.compile("^approved")).count() == 1
    page.check_page("workflow-run-succeeded")


def test_a_non_admin_sees_no_admin_pages_and_the_api_refuses_them(console: Console, page: Page) -> None:
    p = page.page
    name = unique("usr")
    sign_up(page, console, name)
    nav = p.get_by_role("navigation", name="Main")
    for label in ["Users", "Audit log", "DLQs", "Cache"]:
        assert nav.get_by_role("link", name=label, exact=True).count() == 0, label
    p.goto(f"{console.url}#/admin/dlq")  # a reload: signed out (memory only), so sign in again
    sign_in(page, console, name)
    p.evaluate("() => { location.hash = '#/admin/dlq'; }")
    assert "AUTHORIZATION_ERROR" in p.get_by_role("alert").inner_text()

    base = console.runtime.base
    token = requests.post(f"{base}/auth/login", json={"username": name, "password": PASSWORD},
                          timeout=10).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    for method, path in [("GET", "/admin/dlq"), ("POST", "/admin/cache/clear"),
                         ("POST", "/admin/dlq/validation/redrive"), ("GET", "/users"), ("GET", "/metrics")]:
        r = requests.request(method, f"{base}{path}", headers=auth, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["code"] == "AUTHORIZATION_ERROR", (path, r.status_code)
    # the audit log answers a user with their own rows only, never someone else's
    rows = requests.get(f"{base}/audit-logs", headers=auth, timeout=10).json()["items"]
    assert rows and {row["user_id"] for row in rows} == {users_id(base, auth)}


def users_id(base: str, auth: dict[str, str]) -> str:
    import base64
    import json

    payload = auth["Authorization"].split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


def test_an_admin_uses_the_admin_pages(console: Console, page: Page) -> None:
    p = page.page
    name = unique("root")
    console.create_admin(name)
    sign_in(page, console, name)
    nav = p.get_by_role("navigation", name="Main")
    p.get_by_role("heading", name="Queues (admin)").wait_for()
    page.check_page("overview-admin")
    nav.get_by_role("link", name="Users", exact=True).click()
    p.get_by_role("cell", name=name, exact=True).wait_for()
    page.check_page("admin-users")
    nav.get_by_role("link", name="Audit log", exact=True).click()
    p.get_by_label("Event type").fill("auth.login")
    p.get_by_role("button", name="Apply").click()
    p.get_by_role("cell", name="auth.login").first.wait_for()
    page.check_page("admin-audit")
    nav.get_by_role("link", name="DLQs", exact=True).click()
    p.get_by_role("region", name="DLQ of validation").wait_for()
    page.check_page("admin-dlq")
    nav.get_by_role("link", name="Cache", exact=True).click()
    p.get_by_role("button", name="Clear cache").click()
    p.get_by_text(re.compile("^Cleared: ")).wait_for()
    page.check_page("admin-cache")


def test_an_expired_session_refreshes_silently_and_reuse_signs_out(console: Console, page: Page) -> None:
    p = page.page
    name = unique("ses")
    with p.expect_response(lambda r: r.url.endswith("/auth/login")) as login:
        sign_up(page, console, name)
    first_refresh_token = login.value.json()["refresh_token"]

    # GIVEN access tokens that live ACCESS_TTL_SECONDS WHEN the user idles past two of them
    p.wait_for_timeout(ACCESS_TTL_SECONDS * 2500)
    go(p, "Agents")
    p.get_by_role("heading", name="New agent").wait_for()  # THEN the page loads: no sign-in, no error
    refreshes = [r for r in page.requests if r[0] == "POST" and r[1].endswith("/auth/refresh")]
    assert len(refreshes) >= 2 and all(status == 200 for _, _, status in refreshes), refreshes
    assert p.get_by_role("alert").count() == 0

    # WHEN a stolen, already rotated refresh token is replayed THEN the server revokes the family and the
    # console signs out cleanly, saying why
    r = requests.post(f"{console.runtime.base}/auth/refresh", json={"refresh_token": first_refresh_token}, timeout=10)
    assert r.status_code == 401, r.text
    p.get_by_role("heading", name="Sign in").wait_for(timeout=ACCESS_TTL_SECONDS * 3000)
    assert p.get_by_role("status").first.inner_text().startswith(("TOKEN", "AUTHENTICATION", "SESSION"))


def test_the_console_works_from_the_keyboard_with_visible_focus(console: Console, page: Page) -> None:
    p = page.page
    name = unique("kbd")
    sign_up(page, console, name)
    p.get_by_role("button", name="Sign out").click()
    p.get_by_role("heading", name="Sign in").wait_for()

    # Tab reaches the sign-in fields in order; Enter submits
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.id") == "login-username"
    p.keyboard.type(name)
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.id") == "login-password"
    p.keyboard.type(PASSWORD)
    p.keyboard.press("Enter")
    p.get_by_role("navigation", name="Main").wait_for()

    # the first Tab shows the skip link; every focused control has a visible outline
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(4):
        style = p.evaluate("() => { const s = getComputedStyle(document.activeElement); "
                           "return [s.outlineStyle, s.outlineWidth]; }")
        assert style[0] != "none" and style[1] != "0px", style
        p.keyboard.press("Tab")
    # Enter on a navigation link opens its page
    while p.evaluate("document.activeElement.textContent") != "Agents":
        p.keyboard.press("Tab")
    p.keyboard.press("Enter")
    p.get_by_role("heading", name="New agent").wait_for()


def test_an_external_agent_shows_its_key_once_rotates_it_and_its_queued_task_cancels(console: Console,
                                                                                     page: Page) -> None:
    p = page.page
    sign_up(page, console, unique("ext"))
    go(p, "Agents")
    p.get_by_label("Name").first.fill("worker")
    p.get_by_label("Mode").select_option("external")
    p.get_by_role("button", name="Create agent").click()
    first_key = p.locator("code.key").inner_text()
    assert first_key and p.get_by_role("button", name="Copy key").count() == 1
    go(p, "Agents")
    assert p.locator("code.key").count() == 0  # shown once: gone after leaving the page

    p.get_by_role("link", name="worker").click()
    p.get_by_role("button", name="Rotate API key").click()
    p.locator("code.key").wait_for()
    assert p.locator("code.key").inner_text() not in {"", first_key}

    # nobody leases the external agent's task: it waits in `queued` until cancelled from its page
    p.get_by_role("link", name="send it a task").click()
    p.get_by_label("Title").fill("waits for a worker")
    p.get_by_role("button", name="Send task").click()
    p.locator("#task-status [data-status='queued']").wait_for()
    p.get_by_role("button", name="Cancel task").click()
    p.locator("#task-status [data-status='cancelled']").wait_for()
    assert p.get_by_role("button", name="Cancel task").count() == 0

    # deleting the agent leaves the list empty (and says so)
    go(p, "Agents")
    p.get_by_role("row", name=re.compile("worker")).get_by_role("button", name="Delete").click()
    p.get_by_text("No agents yet: create one below.").wait_for()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_the_task_list_shows_new_tasks_and_their_status_changes_live(console: Console, page: Page,
                                                                     transport: str) -> None:
    p = page.page
    if transport == "polling":  # the notification WebSocket refuses every connection: the console polls
        p.route_web_socket(re.compile(".*"), lambda ws: ws.close(code=1011, reason="test: socket down"))
    name = unique("liv")
    sign_up(page, console, name)
    base = console.runtime.base
    s = requests.Session()  # the same user elsewhere (a script): a session of its own
    pair = s.post(f"{base}/auth/login", json={"username": name, "password": PASSWORD}, timeout=10).json()
    s.headers["Authorization"] = f"Bearer {pair['access_token']}"
    agent = s.post(f"{base}/agents", json={"name": "v", "type": "validation"}, timeout=10).json()
    go(p, "Tasks")
    p.get_by_text("No tasks match.").wait_for()
    page.check_page("tasks-empty")
    pair = s.post(f"{base}/auth/refresh", json={"refresh_token": pair["refresh_token"]}, timeout=10).json()
    s.headers["Authorization"] = f"Bearer {pair['access_token']}"  # access tokens last 4 s here

    # WHEN a task is created elsewhere THEN it appears in the open list and turns completed there
    r = s.post(f"{base}/tasks", json={"agent_id": agent["id"], "title": "sent by a script",
                                      "input_data": {"schema": {"type": "object"}, "payload": {}}}, timeout=10)
    assert r.status_code == 202, r.text
    row = p.get_by_role("row", name=re.compile("sent by a script"))
    row.locator("[data-status='completed']").wait_for(timeout=10_000)  # well before the 15 s safety poll
    delivered = any('"task.status_changed"' in f for f in page.ws_frames)
    assert delivered == (transport == "websocket"), page.ws_frames[:5]


def test_a_webhook_is_created_with_its_secret_once_tested_retried_redelivered_rotated_and_deleted(
        console: Console, page: Page) -> None:
    p = page.page
    name = unique("hk")
    sign_up(page, console, name)
    go(p, "Webhooks")
    p.get_by_text("No webhooks yet: create one below.").wait_for()
    verify = docs_verify()

    # GIVEN a URL the stage refuses THEN the API's code is shown
    p.get_by_label("URL").fill("http://169.254.169.254/latest")
    p.get_by_role("button", name="Create webhook").click()
    assert "WEBHOOK_URL_REFUSED" in p.get_by_role("alert").inner_text()

    with receiving() as receiver:  # a receiver on loopback (allowed on development stages): 500 once, then 200
        receiver.script = [Answer(500, body=b"try again")]
        # WHEN a subscription to it is created THEN its secret is shown once, with a copy button
        p.get_by_label("URL").fill(receiver.url)
        p.get_by_label("All (*)").check()
        assert p.get_by_label("run.step_changed").is_disabled()  # "*" stands alone
        p.get_by_label("Description").fill("console test")
        p.get_by_role("button", name="Create webhook").click()
        secret = p.locator("code.key").inner_text()
        assert secret.startswith("whsec_") and p.get_by_role("button", name="Copy secret").count() == 1
        row = p.get_by_role("row", name=receiver.url)
        row.locator("[data-status='active']").wait_for()
        assert "*" in row.inner_text() and "console test" in row.inner_text()
        page.check_page("webhooks")
        go(p, "Overview")
        go(p, "Webhooks")
        p.get_by_role("link", name=receiver.url).click()
        p.get_by_text("No deliveries yet: send a test event.").wait_for()
        assert p.locator("code.key").count() == 0  # shown once: gone after leaving the page

        # WHEN a test event is sent THEN the log shows its 500 attempt and a scheduled retry, then the retry's 200
        loads = len(page.requests)
        p.get_by_role("button", name="Send test event").click()
        p.get_by_text("Test event sent: 500 (a retry is scheduled).").wait_for()  # the request's own attempt
        delivery = p.locator("tr[data-delivery]").first
        first_attempt = delivery.locator("table tbody tr").first
        first_attempt.get_by_role("cell", name="500", exact=True).wait_for()
        assert "try again" in first_attempt.inner_text()  # the answer's start is kept
        assert first_attempt.locator("td").last.inner_text() != "—"  # when its retry was scheduled
        p.locator("tr[data-delivery][data-status='succeeded']").wait_for(timeout=20_000)
        assert not [r for r in page.requests[loads:] if r[1].endswith("/console")], "the page was reloaded"
        codes = delivery.locator("table tbody tr td:nth-child(3)").all_inner_texts()
        assert codes == ["500", "200"], codes
        first, second = receiver.wait_for(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert verify(secret, second.headers, second.body)["type"] == "webhook.test"
        page.check_page("webhook")

        # WHEN the secret is rotated THEN a new one is shown once, and a redelivery is signed with it
        p.get_by_role("button", name="Rotate secret").click()
        p.get_by_text("New secret issued.").wait_for()
        rotated = p.locator("code.key").inner_text()
        assert rotated.startswith("whsec_") and rotated != secret
        delivery.get_by_role("button", name=re.compile("^Redeliver")).click()
        p.get_by_text(re.compile("^Redelivered: attempt 3 answered 200")).wait_for()
        delivery.locator("table tbody tr").nth(2).wait_for()
        third = receiver.wait_for(3)[2]
        assert verify(rotated, third.headers, third.body)["type"] == "webhook.test"
        assert verify(secret, third.headers, third.body)  # the old one still signs during its grace period

        # the log pages with cursors (10 a page): ten more test events, sent by a script as the same user
        base = console.runtime.base
        token = requests.post(f"{base}/auth/login", json={"username": name, "password": PASSWORD},
                              timeout=10).json()["access_token"]
        hook_id = p.evaluate("location.hash").rsplit("/", 1)[1]
        for _ in range(10):
            r = requests.post(f"{base}/webhooks/{hook_id}/test", headers={"Authorization": f"Bearer {token}"},
                              timeout=10)
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        p.get_by_label("Delivery status").select_option("succeeded")
        p.get_by_role("button", name="Apply").click()
        p.locator("tr[data-delivery]").nth(9).wait_for()
        assert p.locator("tr[data-delivery]").count() == 10
        p.get_by_role("button", name="Next").click()
        p.get_by_text("page 2").wait_for()
        assert p.locator("tr[data-delivery]").count() == 1
        assert p.locator("tr[data-delivery] table tbody tr").count() == 3  # the first one, with its 3 attempts
        p.get_by_role("button", name="Previous").click()
        p.get_by_text("page 1").wait_for()
        p.get_by_label("Delivery status").select_option("failed")
        p.get_by_role("button", name="Apply").click()
        p.get_by_text("No failed deliveries.").wait_for()

        # edit: only task.status_changed from now on, and disabled by its owner
        p.get_by_label("All (*)").uncheck()
        p.get_by_label("task.status_changed").check()
        p.get_by_label("Status", exact=True).select_option("disabled")
        p.get_by_role("button", name="Save").click()
        p.get_by_text("Saved.").wait_for()
        assert "task.status_changed · failures in a row 0 · disabled: disabled by its owner" in \
            p.locator("main").inner_text()

    # the list shows it disabled with its reason; deleting it (confirmed) leaves the list empty again
    p.get_by_role("link", name="← Webhooks").click()
    row = p.get_by_role("row", name=receiver.url)
    row.locator("[data-status='disabled']").wait_for()
    assert "disabled by its owner" in row.inner_text()
    row.get_by_role("button", name=re.compile("^Delete")).click()
    p.get_by_text("No webhooks yet: create one below.").wait_for()
