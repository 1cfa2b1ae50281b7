"""The OpenAPI 3.1 document: the Chalice app's routes joined with the spec table (chalicelib/api/spec.py).

Schemas come from the pydantic models (`models_json_schema`, one pass, so shared models become one
component each). OpenAPI 3.1 uses JSON Schema 2020-12, pydantic's own dialect: nothing is translated.
A route without a spec entry is left out (and logged); the test that compares the document with
`app.routes` names it.
"""

from __future__ import annotations

import re
from typing import Any

from chalice import Chalice
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from chalicelib import errors
from chalicelib.api.http import STATUS
from chalicelib.api.spec import JSON, ROUTES, TAGS, RouteSpec
from chalicelib.observability import logger
from chalicelib.ratelimit import EXEMPT_ROUTES
from chalicelib.schemas.common import ErrorEnvelope

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")

ERROR_DESCRIPTIONS = {
    400: "The request body could not be read: not JSON, not a JSON object, too large, or nested too deeply.",
    401: "Missing, invalid, expired or revoked credentials. Always the same generic answer.",
    403: "Authenticated, but the caller's role lacks the permission.",
    404: "No such resource, or it belongs to someone else (the two are indistinguishable).",
    405: "The path exists, but not with this method (`Allow` lists the methods it has).",
    409: "The request conflicts with the resource's current state.",
    415: "The body's Content-Type is not application/json.",
    422: "The request failed validation; `details.errors` lists every problem as {loc, msg, type}.",
    429: "Rate limited. Retry after the `Retry-After` seconds.",
    500: "An unexpected error; the request id in the logs has the details.",
    503: "A dependency this operation needs is unavailable; retry shortly.",
}
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "bearer": [{"bearerAuth": []}], "agent-key": [{"agentKey": []}], "none": []}
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "An access token from POST /auth/login or /auth/refresh."},
    # External agents (self-hosted workers) authenticate with the key shown once when the agent is created.
    "agentKey": {"type": "apiKey", "in": "header", "name": "X-Agent-Key",
                 "description": "An external agent's API key."},
}

_documents: dict[tuple[int, str], dict[str, Any]] = {}


def served_routes(app: Chalice) -> set[tuple[str, str]]:
    return {(method, path) for path, methods in app.routes.items() for method in methods}


def undocumented(app: Chalice) -> list[tuple[str, str]]:
    return sorted(served_routes(app) - ROUTES.keys())


def document(app: Chalice, version: str) -> dict[str, Any]:
    """The document for `app`, built once per process (routes do not change after import)."""
    key = (id(app), version)
    if key not in _documents:
        _documents[key] = build_document(app, version)
    return _documents[key]


def build_document(app: Chalice, version: str) -> dict[str, Any]:
    missing = undocumented(app)
    if missing:
        logger.warning("routes without an OpenAPI spec entry are left out", extra={"routes": missing})
    operations = [(path, method, entry, ROUTES[(method, path)])
                  for path in sorted(app.routes) for method, entry in sorted(app.routes[path].items())
                  if (method, path) in ROUTES]
    refs, schemas = _schemas([spec for *_, spec in operations])
    used_errors: set[int] = set()
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for path, method, entry, spec in operations:
        op_id = _unique(entry.view_name, operation_ids)
        op, statuses = _operation(path, spec, refs, schemas, entry.content_types, op_id)
        used_errors |= statuses
        paths.setdefault(path, {})[method.lower()] = op
    used_tags = {spec.tag for *_, spec in operations}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "YMERA API", "version": version,
                 "description": "Serverless multi-agent task platform. Every error has one shape: "
                                "`{\"error\": {code, message, details, timestamp}}`."},
        "tags": [{"name": name, "description": text} for name, text in TAGS.items() if name in used_tags]
        + [{"name": name} for name in sorted(used_tags - TAGS.keys())],
        "paths": paths,
        "x-websocket": _websocket_doc(),
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES,
                       "responses": {f"Error{s}": _error_response(s) for s in sorted(used_errors)}},
    }


def error_codes(status: int) -> list[str]:
    """Every `error.code` the app can answer with this status (500 is always INTERNAL_ERROR)."""
    if status == 500:
        return ["INTERNAL_ERROR"]
    return sorted({cls.code for cls in _subclasses(errors.AppError) if _status_of(cls) == status})


def _subclasses(cls: type[errors.AppError]) -> list[type[errors.AppError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


def _status_of(cls: type[errors.AppError]) -> int:
    return next((STATUS[c] for c in cls.__mro__ if c in STATUS), 500)


def _schemas(specs: list[RouteSpec]) -> tuple[dict[tuple[type[BaseModel], str], dict[str, Any]],
                                              dict[str, Any]]:
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorEnvelope, "serialization")]
    for spec in specs:
        pairs += [(m, "validation") for m in (spec.body, spec.query) if m is not None]
        pairs += [(m, "serialization") for m in (spec.response, *spec.responses.values())
                  if isinstance(m, type)]
    unique = list(dict.fromkeys(pairs))
    refs, top = models_json_schema(unique, ref_template=REF)
    # models_json_schema keys by (model, mode) exactly as passed in: the pairs above, all BaseModels.
    return {(model, mode): ref for (model, mode), ref in refs.items()}, top.get("$defs", {})  # type: ignore[misc]


def _operation(path: str, spec: RouteSpec, refs: dict[tuple[type[BaseModel], str], dict[str, Any]],
               schemas: dict[str, Any], content_types: list[str], op_id: str) -> tuple[dict[str, Any], set[int]]:
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string", **({"format": "uuid"} if name.endswith("_id") else {})}}
              for name in _PATH_PARAM.findall(path)]
    params += [{"name": name, "in": "header", "required": True, "description": text, "schema": {"type": "string"}}
               for name, text in spec.headers.items()]
    params += [{"name": name, "in": "header", "required": False, **fields}
               for name, fields in spec.optional_headers.items()]
    if spec.query is not None:
        params += _query_parameters(_resolve(refs[(spec.query, "validation")], schemas))
    op: dict[str, Any] = {"operationId": op_id, "summary": spec.summary, "tags": [spec.tag],
                          "security": SECURITY[spec.auth]}
    if spec.description:
        op["description"] = spec.description
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {"required": spec.body_required,
                             "content": {ct: {"schema": refs[(spec.body, "validation")]} for ct in content_types}}
    responses: dict[str, Any] = {str(spec.status): _success(spec, refs)}
    for status, model in spec.responses.items():
        responses[str(status)] = {"description": ERROR_DESCRIPTIONS.get(status, model.__name__),
                                  "content": {JSON: {"schema": refs[(model, "serialization")]}}}
    statuses = _error_statuses(path, spec) - {int(s) for s in responses}
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    op["responses"] = dict(sorted(responses.items()))
    return op, statuses


def _success(spec: RouteSpec, refs: dict[tuple[type[BaseModel], str], dict[str, Any]]) -> dict[str, Any]:
    if spec.response is None:
        return {"description": "No content."}
    schema = refs[(spec.response, "serialization")] if isinstance(spec.response, type) else spec.response
    success: dict[str, Any] = {"description": spec.summary,
                               "content": {mt: {"schema": schema} for mt in spec.media_types}}
    if spec.response_headers:
        success["headers"] = {name: dict(header) for name, header in spec.response_headers.items()}
    return success


def _error_statuses(path: str, spec: RouteSpec) -> set[int]:
    statuses = {500, *spec.errors}
    if spec.auth != "none":
        statuses.add(401)
    if spec.body is not None:
        statuses |= {400, 422}
    if spec.query is not None:
        statuses.add(422)
    if _PATH_PARAM.search(path):
        statuses.add(404)
    if path not in EXEMPT_ROUTES:
        statuses.add(429)
    return statuses


def _error_response(status: int) -> dict[str, Any]:
    # ErrorEnvelope, with `error.code` narrowed to what this status can carry.
    schema = {"allOf": [{"$ref": REF.format(model="ErrorEnvelope")},
                        {"properties": {"error": {"properties": {"code": {"enum": error_codes(status)}}}}}]}
    response: dict[str, Any] = {"description": ERROR_DESCRIPTIONS.get(status, f"HTTP {status}"),
                                "content": {JSON: {"schema": schema}}}
    if status == 429:
        response["headers"] = {"Retry-After": {"description": "Seconds until a request may succeed.",
                                               "schema": {"type": "integer"}}}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}
    return response


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                 "schema": _without_null(prop)}
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """`X | None = None` in a query model means "may be omitted": a query string cannot carry null."""
    schema = {k: v for k, v in prop.items() if not (k == "default" and v is None)}
    branches = [b for b in schema.get("anyOf", []) if b != {"type": "null"}]
    if "anyOf" in schema and len(branches) == 1:
        del schema["anyOf"]
        schema = {**branches[0], **schema}
    return schema


def _resolve(ref: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    name = ref["$ref"].rsplit("/", 1)[-1]
    return dict(schemas[name])


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _websocket_doc() -> dict[str, Any]:
    from chalicelib.api.websocket_doc import WEBSOCKET

    return WEBSOCKET
