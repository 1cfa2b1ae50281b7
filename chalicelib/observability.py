"""The only Logger and Metrics objects. Tracer is not built here: the X-Ray SDK costs ~200 ms of cold start.

Context keys (request_id, user_id, task_id) are thread-local (a ContextVar in
powertools), so the threaded local server and in-process consumers never mix
one request's keys into another's log lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import RESERVED_LOG_ATTRS, LambdaPowertoolsFormatter

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

#: What a JSON text can start with (Python's json also reads NaN, Infinity and -Infinity).
_JSON_FIRST = frozenset('{["-0123456789tfnNI')
_RESERVED = frozenset(RESERVED_LOG_ATTRS)


class _Formatter(LambdaPowertoolsFormatter):
    """Powertools' formatter, line for line, minus two per-line costs of the common record (a plain-text
    message): the JSON decode attempt of a message that cannot be JSON (it raised and was caught on every
    line), and a json.dumps that built a new encoder per line (the same encoder, built once: `_tuned`).
    `_extract_log_keys` is Powertools' own, with set lookups for its tuple scans and no intermediate dicts."""

    def format(self, record: logging.LogRecord) -> str:  # noqa: A003 - logging's name
        """Powertools' `format` for a record without an exception (the access log, most lines): what its
        exception and stack-trace steps do then is leave keys present as they are, add None for keys absent
        (stripped below) and set `stack_trace` to None (stripped too). With an exception: Powertools' own."""
        if record.exc_info:
            return super().format(record)
        formatted_log = self._extract_log_keys(log_record=record)
        formatted_log["message"] = self._extract_log_message(log_record=record)
        if self.serialize_stacktrace:
            formatted_log["stack_trace"] = None
        formatted_log["xray_trace_id"] = self._get_latest_trace_id()
        return self.serialize(log={k: v for k, v in formatted_log.items() if v is not None})

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """Powertools' default timestamp ("2021-05-03 10:20:19,650+0200") with the strftime done once per
        second of the clock (the struct time, and so %z, is per second); any other format: Powertools' own."""
        if self.use_rfc3339_iso8601 or (datefmt or self.datefmt):
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._second
        if cached is None or cached[0] != second or cached[1] is not self.converter:
            struct = self.converter(record.created)
            parts = [time.strftime(part, struct)
                     for part in self.default_time_format.split(self.custom_ms_time_directive)]
            cached = self._second = (second, self.converter, parts)
        return ("%03d" % record.msecs).join(cached[2])  # noqa: UP031 - Powertools' own msecs format

    _second: tuple[int, Callable[..., Any], list[str]] | None = None

    def _extract_log_keys(self, log_record: logging.LogRecord) -> dict[str, Any]:
        record_dict = log_record.__dict__.copy()
        record_dict["asctime"] = self.formatTime(record=log_record)
        formatted_log: dict[str, Any] = {}
        for keys in (self.log_format, self.thread_safe_get_current_keys()):
            for key, value in keys.items():
                if value and key in _RESERVED:
                    if not isinstance(value, str):
                        return super()._extract_log_keys(log_record)  # which raises Powertools' ValueError
                    formatted_log[key] = value % record_dict
                else:
                    formatted_log[key] = value
        for key, value in record_dict.items():  # the record's extras, last
            if key not in _RESERVED:
                formatted_log[key] = value
        return formatted_log

    def _extract_log_message(self, log_record: logging.LogRecord) -> Any:
        message = log_record.msg
        if isinstance(message, str) and not log_record.args and message.lstrip()[:1] not in _JSON_FIRST:
            return message  # what the decode attempt left it as
        return super()._extract_log_message(log_record)


def _tuned(target: Logger) -> Logger:
    formatter = target.registered_formatter
    if type(formatter) is LambdaPowertoolsFormatter:  # a formatter someone configured stays as it is
        formatter.__class__ = _Formatter
        # json.dumps(obj, **options) is JSONEncoder(**options).encode(obj): the options Powertools passes.
        formatter.json_serializer = json.JSONEncoder(default=formatter.json_default, separators=(",", ":"),
                                                     indent=formatter.json_indent, ensure_ascii=False).encode
    return target


logger = _tuned(Logger(service="ymera"))
_target = logging.getLogger(logger.name)  # the stdlib logger under `logger`: its handlers write the lines

#: Container start (module import = cold start); /status reports uptime from it.
STARTED_AT = time.time()
_STARTED_MONOTONIC = time.monotonic()

METRICS_NAMESPACE = "YMERA"


def uptime_seconds() -> float:
    return time.monotonic() - _STARTED_MONOTONIC


@contextmanager
def log_context(**keys: str | None) -> Iterator[None]:
    """Add keys to every log line of this thread for the duration of the block."""
    present = {k: v for k, v in keys.items() if v is not None}
    logger.thread_safe_append_keys(**present)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(present)


def access_log(message: str, fields: Mapping[str, object]) -> None:
    """`logger.info(message, extra=fields)` for the one line every request writes, without the per-call
    cost of finding the caller by walking the stack: the record names its caller (function and line, the
    line's `location`) from the calling frame, and the Logger's handlers format and write it as ever."""
    if not _target.isEnabledFor(logging.INFO):
        return
    caller = sys._getframe(1)
    code = caller.f_code
    _target.handle(_target.makeRecord(_target.name, logging.INFO, code.co_filename, caller.f_lineno, message, (),
                                      None, code.co_name, fields))


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    """CloudWatch EMF metrics, built on first use (the API never needs them)."""
    from aws_lambda_powertools import Metrics

    return Metrics(namespace=METRICS_NAMESPACE, service="ymera")


def publish_task_outcomes(outcomes: Iterable[tuple[str, str, float]]) -> None:
    """Emit TaskCompleted / TaskFailed / TaskDurationMs per agent_type: one EMF line per type.

    `outcomes` are (agent_type, status, duration_ms) of tasks whose results were committed.
    """
    from aws_lambda_powertools.metrics import MetricUnit

    by_type: dict[str, list[tuple[str, float]]] = {}
    for agent_type, status, duration_ms in outcomes:
        by_type.setdefault(agent_type, []).append((status, duration_ms))
    m = metrics()
    for agent_type, rows in by_type.items():
        m.add_dimension(name="agent_type", value=agent_type)
        for name, wanted in (("TaskCompleted", "completed"), ("TaskFailed", "failed")):
            m.add_metric(name=name, unit=MetricUnit.Count, value=sum(1 for status, _ in rows if status == wanted))
        for _, duration_ms in rows:
            m.add_metric(name="TaskDurationMs", unit=MetricUnit.Milliseconds, value=duration_ms)
        m.flush_metrics()  # also clears dimensions, so the next type gets its own line
