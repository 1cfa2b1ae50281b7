"""GET /openapi.json, the interactive docs page GET /docs, and its assets GET /docs/assets/{name}.

The page loads only assets shipped in chalicelib/static (Swagger UI, vendored from npm), so it works
with no internet access; its Content-Security-Policy forbids every other origin. URLs carry the
API Gateway stage prefix (e.g. /api) taken from the request, so the page works behind a stage and on
`chalice local` alike. The document is generated on first request (not at cold start) and kept.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from chalice import Blueprint, Response
from chalice.app import Request

from chalicelib import errors
from chalicelib.api.http import endpoint, ok
from chalicelib.container import get_container

bp = Blueprint(__name__)

_SAFE_PREFIX = re.compile(r"[A-Za-z0-9/_.~-]*")  # a stage or base-path mapping; nothing that needs escaping
STATIC = Path(__file__).resolve().parents[1] / "static"
#: the only files served; anything else is 404 (no path traversal, no directory listing)
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "application/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    "ymera-docs.js": ("ymera-docs.js", "application/javascript; charset=utf-8"),
    "LICENSE": ("swagger-ui/LICENSE", "text/plain; charset=utf-8"),
    "NOTICE": ("swagger-ui/NOTICE", "text/plain; charset=utf-8"),
    "swagger-ui-bundle.js.LICENSE.txt": ("swagger-ui/swagger-ui-bundle.js.LICENSE.txt", "text/plain; charset=utf-8"),
}
# Swagger UI sets inline styles and uses data: URIs for its icons; scripts and requests stay same-origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>YMERA API</title>
<link rel="stylesheet" href="{base}/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec-url="{base}/openapi.json"></div>
<script src="{base}/docs/assets/swagger-ui-bundle.js"></script>
<script src="{base}/docs/assets/ymera-docs.js"></script>
</body>
</html>
"""


def base_path(request: Request) -> str:
    """The stage prefix API Gateway put before our routes ("/api"), or "" (chalice local, tests)."""
    context = request.context or {}
    full, resource = str(context.get("path") or ""), str(context.get("resourcePath") or "")
    if resource and full.endswith(resource):
        prefix = full[: len(full) - len(resource)].rstrip("/")
        return prefix if _SAFE_PREFIX.fullmatch(prefix) else ""
    return ""


@bp.route("/openapi.json", methods=["GET"])
@endpoint
def openapi_document() -> Response:
    from chalicelib.api.openapi import document  # schema generation is first-request work, not cold start

    doc = document(bp.current_app, get_container().settings.version)
    return ok({**doc, "servers": [{"url": base_path(bp.current_request) or "/"}]})


@bp.route("/docs", methods=["GET"])
@endpoint
def docs_page() -> Response:
    html = PAGE.format(base=base_path(bp.current_request))
    return Response(body=html, status_code=200,
                    headers={"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": CSP,
                             "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


@bp.route("/docs/assets/{name}", methods=["GET"])
@endpoint
def docs_asset(name: str) -> Response:
    if name not in ASSETS:
        raise errors.NotFoundError("asset not found", {"name": name[:100]})
    body, content_type = _asset(name)
    # Text bodies: API Gateway passes them through as they are (none of these types is a binary type).
    return Response(body=body, status_code=200,
                    headers={"Content-Type": content_type, "Cache-Control": "public, max-age=86400",
                             "X-Content-Type-Options": "nosniff"})


@lru_cache(maxsize=len(ASSETS))
def _asset(name: str) -> tuple[str, str]:
    relative, content_type = ASSETS[name]
    return (STATIC / relative).read_text(encoding="utf-8"), content_type
