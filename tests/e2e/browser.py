"""Shared machinery of the console's browser tests: the local runtime (as `make run` starts it), Debian's
Chromium driven by Playwright, an axe-core check and a screenshot per page.

Chromium is never downloaded (`playwright install` cannot work here): it is /usr/bin/chromium from apt
(.ci/run installs it). Without it the tests skip locally with the reason, and fail under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_local_runtime import ROOT, Runtime

CHROMIUM = os.environ.get("YMERA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
AXE = ROOT / "tests" / "e2e" / "vendor" / "axe.min.js"
SHOTS = ROOT / "docs" / "console"
#: short enough that a test outlives several access tokens: the console must refresh them silently.
ACCESS_TTL_SECONDS = 4
PASSWORD = "correct horse battery"
WEBHOOK_RETRY_BASE_SECONDS = 3


def require_browser() -> Any:
    """The Playwright module, or a skip (locally) / failure (CI) saying what is missing."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        missing.append("playwright for Python (pip install -r requirements-dev.txt)")
        sync_api = None
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must install them (.ci/run)", pytrace=False)
        pytest.skip(reason)
    return sync_api


class Console:
    """One runtime + one browser for a test module."""

    def __init__(self, runtime: Runtime, browser: Any, pg_url: str) -> None:
        self.runtime, self.browser, self.pg_url = runtime, browser, pg_url
        self.url = f"{runtime.base}/console"

    def new_page(self) -> Page:
        context = self.browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US",
                                           timezone_id="UTC")
        return Page(context.new_page(), context)

    def create_admin(self, username: str) -> None:
        env = {**os.environ, "DATABASE_URL": self.pg_url, "YMERA_ADMIN_PASSWORD": PASSWORD, "YMERA_STAGE": "test"}
        subprocess.run([sys.executable, "-m", "chalicelib.admin", "create-admin", "--username", username,
                        "--email", f"{username}@example.com"], cwd=ROOT, env=env, check=True, capture_output=True,
                       timeout=60)


class Page:
    """A Playwright page that records what must never happen: uncaught errors and CSP violations."""

    def __init__(self, page: Any, context: Any) -> None:
        self.page, self.context = page, context
        self.problems: list[str] = []
        self.requests: list[tuple[str, str, int]] = []
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        page.on("console", self._console)
        page.on("response", lambda r: self.requests.append((r.request.method, r.url, r.status)))
        page.on("dialog", lambda dialog: dialog.accept())  # the console confirms deletes, rotations, redrives
        self.ws_frames: list[str] = []  # what the notification WebSocket delivered
        page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: self.ws_frames.append(str(frame))))
        page.set_default_timeout(15_000)

    def _console(self, msg: Any) -> None:
        text = msg.text
        if "Content Security Policy" in text or msg.type == "error" and "Failed to load resource" not in text:
            self.problems.append(f"console {msg.type}: {text}")

    def check_page(self, name: str) -> None:
        """axe-core on the page as it is now (serious/critical violations fail), then a screenshot."""
        page = self.page
        if not page.evaluate("typeof window.axe !== 'undefined'"):
            page.evaluate(AXE.read_text(encoding="utf-8"))  # evaluated over CDP: the page's CSP stays strict
        result = page.evaluate("""async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.filter(v => ['serious', 'critical'].includes(v.impact)).map(v =>
                `${v.impact} ${v.id}: ${v.help} -> ` + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | '));
        }""")
        assert result == [], f"accessibility violations on {name}:\n" + "\n".join(result)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.problems == [], "\n".join(self.problems)


@pytest.fixture(scope="module", name="console")
def console_fixture(pg_url: str, redis_url: str) -> Iterator[Console]:
    sync_api = require_browser()
    from tests.conftest import REDIS_PREFIX

    logs = Path(tempfile.mkdtemp(prefix="ymera-console-"))
    runtime = Runtime(logs, {"DATABASE_URL": pg_url, "REDIS_URL": redis_url,
                             "YMERA_REDIS_KEY_PREFIX": f"{REDIS_PREFIX}console:",
                             "YMERA_ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TTL_SECONDS),
                             # a webhook's retry 1.5-3 s after a 500 (not 5-10 s): the page shows the retry
                             "YMERA_WEBHOOK_RETRY_BASE_SECONDS": str(WEBHOOK_RETRY_BASE_SECONDS)})
    try:
        runtime.wait_ready()
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                yield Console(runtime, browser, pg_url)
            finally:
                browser.close()
    finally:
        code = runtime.stop()
        shutil.rmtree(logs, ignore_errors=True)
    assert code == 0, f"runtime did not stop cleanly ({code})"


@pytest.fixture(name="page")
def page_fixture(console: Console) -> Iterator[Page]:
    p = console.new_page()
    yield p
    p.close()


def sign_up(p: Page, console: Console, username: str) -> None:
    page = p.page
    page.goto(console.url)
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Email", exact=True).fill(f"{username}@example.com")
    page.locator("#reg-password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.get_by_role("navigation", name="Main").wait_for()


def sign_in(p: Page, console: Console, username: str) -> None:
    page = p.page
    page.goto(console.url)
    page.get_by_label("Username or email").fill(username)
    page.locator("#login-password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").wait_for()
