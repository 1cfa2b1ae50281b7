"""The console's routes (GET /console, its assets) and the CORS allow-list, through the Chalice app.

The browser tests (tests/e2e/test_console.py) drive the pages; these pin what the server promises: the CSP,
the stage prefix, which files are served, and that CORS is off unless an origin is listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from app import app
from chalicelib.api import console
from chalicelib.config import Settings
from chalicelib.container import Container, set_container
from chalicelib.db.session import Database
from tests.integration.conftest import Api, FakeContext
from tests.integration.test_openapi import _gateway_event

CONSOLE = "https://console.example.com"


def test_the_page_loads_only_same_origin_modules_under_a_strict_csp(api: Api) -> None:
    r = api.call("GET", "/console", token="")
    assert r.status_code == 200
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self';" in csp
    assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
    body = r.body.decode()
    assert re.findall(r'<script[^>]*>', body) == ['<script type="module" src="/console/assets/app.js">']
    assert " style=" not in body and "http" not in body.replace("http-equiv", "")


def test_every_asset_is_served_with_its_type_and_nothing_else_is(api: Api) -> None:
    names = console.asset_names()
    assert {"app.js", "api.js", "live.js", "console.css"} <= set(names)
    for name in names:
        r = api.call("GET", f"/console/assets/{name}", token="")
        assert r.status_code == 200, name
        assert r.headers["Content-Type"] == console.CONTENT_TYPES[name.rsplit(".", 1)[1]]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    for name in ["..%2F..%2Fconfig.py", "console.py", "APP.JS", ".hidden.js", "x.html"]:
        r = api.call("GET", f"/console/assets/{name}", token="")
        assert r.status_code == 404 and r.json_body["error"]["code"] == "NOT_FOUND", name


def test_no_asset_uses_inline_styles_eval_or_innerhtml() -> None:
    for name in console.asset_names():
        text = (console.ASSET_DIR / name).read_text(encoding="utf-8")
        for forbidden in (".innerHTML", "insertAdjacentHTML", "eval(", "new Function", "localStorage.",
                          "sessionStorage.", ".style.", "setAttribute(\"style\""):
            assert forbidden not in text, f"{name} uses {forbidden}"


def test_urls_carry_the_api_gateway_stage_prefix(api: Api) -> None:
    page = app(_gateway_event("/console", "api"), FakeContext())
    assert page["statusCode"] == 200
    assert 'data-base="/api"' in page["body"]
    assert sorted(re.findall(r'(?:src|href)="([^"]*)"', page["body"])) == [
        "/api/console/assets/app.js", "/api/console/assets/console.css", "/api/console/assets/icon.svg", "/api/docs"]


@pytest.fixture
def cors_api(api: Api, settings: Settings, db: Database) -> Iterator[Api]:
    """`api` with YMERA_CONSOLE_CORS_ORIGINS set (after the `container` fixture installed the default one)."""
    set_container(Container(settings.model_copy(update={"console_cors_origins": f"{CONSOLE}, http://x.test"}),
                            database=db))
    yield api
    set_container(None)


def test_cors_is_off_by_default(api: Api) -> None:
    r = api.call("GET", "/health", token="", headers={"Origin": CONSOLE})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_a_listed_origin_gets_cors_headers_and_its_preflight_answered(cors_api: Api) -> None:
    api = cors_api
    r = api.call("GET", "/health", token="", headers={"Origin": CONSOLE})
    assert r.headers["Access-Control-Allow-Origin"] == CONSOLE and r.headers["Vary"] == "Origin"
    # A preflight that reaches the function (chalice local and a REST API's generated methods answer OPTIONS
    # themselves; docs/console.md) is answered before routing, without credentials.
    event = _gateway_event("/agents", "api")
    event["httpMethod"] = event["requestContext"]["httpMethod"] = "OPTIONS"
    event["headers"] = {"Origin": CONSOLE, "Access-Control-Request-Method": "POST"}
    pre = app(event, FakeContext())
    assert pre["statusCode"] == 204
    assert "Authorization" in pre["headers"]["Access-Control-Allow-Headers"]
    assert pre["headers"]["Access-Control-Allow-Origin"] == CONSOLE
    assert "Access-Control-Allow-Credentials" not in pre["headers"]
    other = api.call("GET", "/health", token="", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_the_csp_allows_the_notification_websocket_origin_and_nothing_broader() -> None:
    csp = console.content_security_policy("", "ws://127.0.0.1:8001/")
    assert "connect-src 'self' ws://127.0.0.1:8001;" in csp
    assert "connect-src 'self' wss://abc.execute-api.eu-west-1.amazonaws.com https://x.test;" in \
        console.content_security_policy("https://x.test", "wss://abc.execute-api.eu-west-1.amazonaws.com/prod")
    assert "connect-src 'self';" in console.content_security_policy("", "javascript:alert(1)")


def test_the_webhooks_page_offers_exactly_the_ledgers_event_types() -> None:
    from chalicelib.events.ledger import EVENT_TYPES

    text = (console.ASSET_DIR / "page-webhooks.js").read_text(encoding="utf-8")
    found = re.search(r"export const EVENT_TYPES = \[([^\]]*)\];", text)
    assert found is not None, "page-webhooks.js no longer declares EVENT_TYPES"
    assert re.findall(r'"([^"]+)"', found.group(1)) == list(EVENT_TYPES)
