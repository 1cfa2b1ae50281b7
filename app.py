"""YMERA API: the Chalice app. Thin on purpose: routes live in chalicelib.api blueprints."""

import os

from chalice import Chalice

from chalicelib.api import (
    admin,
    agent_types,
    agents,
    audit,
    auth,
    console,
    cors,
    docs,
    engines,
    events,
    feedback,
    health,
    messages,
    middleware,
    monitoring,
    producer_keys,
    provider_keys,
    tasks,
    users,
    webhooks,
    websocket,
    workers,
    workflows,
)
from chalicelib.api.http import envelope_middleware
from chalicelib.config import get_settings
from chalicelib.container import get_container

# Fail the cold start, not the first request, when the environment is wrong. Only in a
# Lambda (or the local runtime): `chalice deploy`/`package` import this module to read
# the routes on a machine that has no runtime configuration, and must not need it.
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or os.environ.get("YMERA_CHECK_SETTINGS_AT_IMPORT"):
    get_settings().require_token_secret()
    # In the init phase, not in the first POST /tasks: the SQS client its fast-path publish uses.
    get_container().warm()

app = Chalice(app_name="ymera")
# Every route answers text (JSON, HTML, CSS, JS, SVG, Prometheus text) and reads JSON: no binary media types.
# Chalice's default list (16 types) is matched, lower-cased and regex-split, 4 times per request (~10 us of a
# cached GET /tasks/{id}); it also becomes the REST API's binaryMediaTypes, which this API has no use for.
app.api.binary_types = []
app.register_blueprint(auth.bp)
app.register_blueprint(users.bp)
app.register_blueprint(agents.bp)
app.register_blueprint(agent_types.bp)
app.register_blueprint(tasks.bp)
app.register_blueprint(feedback.bp)  # POST/GET /tasks/{task_id}/feedback (the learning agent counts ratings)
app.register_blueprint(messages.bp)  # GET /agents/{agent_id}/messages: an agent's inbox (communication agent)
app.register_blueprint(health.bp)
app.register_blueprint(monitoring.bp)
app.register_blueprint(admin.bp)
app.register_blueprint(audit.bp)
app.register_blueprint(provider_keys.bp)  # PUT/GET/DELETE /provider-keys: users' own keys for their own endpoints
app.register_blueprint(producer_keys.bp)  # POST/GET/DELETE /producer-keys: event producers' signing keys
app.register_blueprint(workflows.bp)  # /workflows, /runs: pipelines on Step Functions (docs/workflows-api.md)
app.register_blueprint(engines.bp)  # GET /engines, POST /engines/{name}: analytics, performance, ... (docs/engines.md)
app.register_blueprint(events.bp)  # GET /events: the caller's event ledger after a cursor (docs/events.md)
app.register_blueprint(webhooks.bp)  # /webhooks: signed, retried deliveries with a log (docs/webhooks.md)
app.register_blueprint(workers.bp)  # external agents: lease, heartbeat, complete/fail; agent status
# Live events (docs/websocket.md): API Gateway WebSocket routes. Not a blueprint (chalicelib.api.websocket says
# why); the module-level names are the Lambda handlers Chalice packages ("app.ws_connect", ...).
app.experimental_feature_flags.update(["WEBSOCKETS"])
ws_connect = app.on_ws_connect(name="ws_connect")(websocket.ws_connect)
ws_message = app.on_ws_message(name="ws_message")(websocket.ws_message)
ws_disconnect = app.on_ws_disconnect(name="ws_disconnect")(websocket.ws_disconnect)
app.register_blueprint(docs.bp)  # GET /openapi.json, /docs (routes documented in chalicelib/api/spec.py)
app.register_blueprint(console.bp)  # GET /console: the web console (docs/console.md)
# Outermost: Chalice's own answers (405, 415) and anything raised outside a view use the error envelope.
app.register_middleware(envelope_middleware, "http")
# CORS only for origins in YMERA_CONSOLE_CORS_ORIGINS (empty: none); answers their preflights before routing.
app.register_middleware(cors.cors_middleware, "http")
# Log context, rate limiting (X-RateLimit-* / 429) and request metrics around every route.
app.register_middleware(middleware.http_middleware, "http")
