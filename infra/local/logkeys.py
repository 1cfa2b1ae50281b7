"""Per-thread Powertools log keys for the one process that runs every function.

On AWS each Lambda function is its own process, so the keys `inject_lambda_context` puts on
the Logger (`function_name`, `function_request_id`, `cold_start`, ...) describe the only
function there is. Under `make run` the API server and every handler share one process and
one Logger, and Powertools keeps those keys in the formatter's `log_format` dict, shared by
all threads: an API `/health` line carried the lease reaper's `function_name`. Installed on
the app's Logger, this makes `log_format` a per-thread dict, so each thread's lines carry the
keys of the function that thread runs.
"""

from __future__ import annotations

import threading
from typing import Any


def per_thread_log_keys(logger: Any) -> None:
    """Give the Logger's formatter one `log_format` per thread (a copy of the current one)."""
    formatter = logger.registered_formatter
    cls = type(formatter)
    if getattr(cls, "_ymera_per_thread", False):
        return
    base = dict(formatter.log_format)  # service, level, ...: what every thread starts with
    local = threading.local()

    def get(_self: Any) -> dict[str, Any]:
        keys: dict[str, Any] | None = getattr(local, "keys", None)
        if keys is None:
            keys = local.keys = dict(base)
        return keys

    def set_(_self: Any, value: dict[str, Any]) -> None:
        local.keys = value

    per_thread = type(f"PerThread{cls.__name__}", (cls,),
                      {"log_format": property(get, set_), "_ymera_per_thread": True})
    formatter.__dict__.pop("log_format", None)
    formatter.__class__ = per_thread
