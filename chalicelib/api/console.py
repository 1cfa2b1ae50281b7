"""The web console: GET /console (the page) and GET /console/assets/{name} (its ES modules and stylesheet).

No build step: the assets in chalicelib/static/console are the files the browser runs (plain ES modules), so
`make run` needs only Python and what is reviewed is what is served (docs/console.md). Chalice has no greedy
paths, hence one flat asset directory; a file is served only if it sits directly in that directory with a
known extension (no traversal, no listing). The Content-Security-Policy allows nothing but this origin:
no inline script, no inline style, no eval, no frames.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from chalice import Blueprint, Response

from chalicelib import errors
from chalicelib.api.docs import base_path
from chalicelib.api.http import endpoint
from chalicelib.container import get_container

bp = Blueprint(__name__)

ASSET_DIR = Path(__file__).resolve().parents[1] / "static" / "console"
CONTENT_TYPES = {
    "js": "application/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
}
_ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\.(js|css|svg|txt)")
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>YMERA console</title>
<link rel="icon" href="{base}/console/assets/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{base}/console/assets/console.css">
</head>
<body>
<div id="app" data-base="{base}"><p class="boot">Loading the console…</p></div>
<noscript><p>The YMERA console needs JavaScript. The API is documented at <a href="{base}/docs">/docs</a>.</p>
</noscript>
<script type="module" src="{base}/console/assets/app.js"></script>
</body>
</html>
"""


def content_security_policy(extra_connect: str, websocket_url: str = "") -> str:
    """connect-src: this origin, the notification WebSocket's origin (under `make run` it listens on another
    port, which 'self' does not cover), and YMERA_CONSOLE_CONNECT_SRC."""
    from urllib.parse import urlsplit

    ws = urlsplit(websocket_url)
    ws_origin = [f"{ws.scheme}://{ws.netloc}"] if ws.scheme in {"ws", "wss"} and ws.netloc else []
    connect = " ".join(["'self'", *ws_origin, *extra_connect.split()])
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@bp.route("/console", methods=["GET"])
@endpoint
def console_page() -> Response:
    html = PAGE.format(base=base_path(bp.current_request))
    settings = get_container().settings
    csp = content_security_policy(settings.console_connect_src, settings.websocket_url)
    return Response(body=html, status_code=200,
                    headers={"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": csp,
                             "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                             "Cache-Control": "no-cache"})


@bp.route("/console/assets/{name}", methods=["GET"])
@endpoint
def console_asset(name: str) -> Response:
    match = _ASSET_NAME.fullmatch(name)
    body = _asset(name) if match else None
    if match is None or body is None:
        raise errors.NotFoundError("asset not found", {"name": name[:100]})
    # no-cache (revalidate) rather than max-age: the modules import each other by fixed names, and a
    # half-updated set after a deploy would break the page.
    return Response(body=body, status_code=200,
                    headers={"Content-Type": CONTENT_TYPES[match.group(1)], "Cache-Control": "no-cache",
                             "X-Content-Type-Options": "nosniff"})


@lru_cache(maxsize=128)
def _asset(name: str) -> str | None:
    path = ASSET_DIR / name
    return path.read_text(encoding="utf-8") if path.is_file() else None


def asset_names() -> list[str]:
    """Every servable asset (tests and docs)."""
    return sorted(p.name for p in ASSET_DIR.iterdir() if p.is_file() and _ASSET_NAME.fullmatch(p.name))
