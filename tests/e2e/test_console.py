"""The web console in a real browser (Debian's Chromium, headless) against the local runtime.

Each page test runs axe-core (no serious/critical violation) and saves the screenshot the README shows
(docs/console/*.png). Nothing is mocked: the runtime is `python -m infra.local` on its own port.
"""

from __future__ import annotations

import re
import uuid

import pytest
import requests

from tests.e2e.browser import PASSWORD, Console, Page, console_fixture, page_fixture, sign_in, sign_up  # noqa: F401 - fixtures used by name

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

    # THEN the task page turns `completed` by itself (no reload: the document is never requested again)
    p.locator("#task-status [data-status='completed']").wait_for(timeout=30_000)
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
    go(p, "Agents")
    p.get_by_role("link", name="checker-2").wait_for()
    assert p.locator("[data-status='inactive']").count() == 1


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
