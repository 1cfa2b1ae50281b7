"""The only Logger and Metrics objects. Tracer is not built here: the X-Ray SDK costs ~200 ms of cold start.

Context keys (request_id, user_id, task_id) are thread-local (a ContextVar in
powertools), so the threaded local server and in-process consumers never mix
one request's keys into another's log lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from types import CodeType
from typing import TYPE_CHECKING, Any, NamedTuple

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.filters import SuppressFilter
from aws_lambda_powertools.logging.formatter import RESERVED_LOG_ATTRS, LambdaPowertoolsFormatter

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

#: What a JSON text can start with (Python's json also reads NaN, Infinity and -Infinity).
_JSON_FIRST = frozenset('{["-0123456789tfnNI')
_RESERVED = frozenset(RESERVED_LOG_ATTRS)
#: The attributes every LogRecord has (extras may not be named like them: makeRecord raises KeyError).
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__)
#: What makeRecord refuses as an extra's name (KeyError): the record's own attributes, `message`, `asctime`.
_NOT_EXTRAS = _RECORD_ATTRS | {"message", "asctime"}
#: Record attributes Powertools would write as extras (none on 3.11; a newer Python's, e.g. `taskName`): while
#: any exists, the access line takes the standard path.
_UNRESERVED_RECORD_ATTRS = _RECORD_ATTRS - _RESERVED


class _Stamp(NamedTuple):
    """What `formatTime` reads of a record."""

    created: float
    msecs: float


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

    #: (log_format as it was, call site, message) -> that line's template; see `access_line`.
    _templates: dict[tuple[CodeType, int, str], tuple[dict[str, Any], _Template | None]] | None = None
    #: the compact encoder `_tuned` built; the template writes its JSON only while it is `json_serializer`.
    _compact: Callable[[Any], str] | None = None

    def _compact_in_use(self) -> Callable[[Any], str] | None:
        compact = self._compact
        return compact if compact is not None and self.json_serializer is compact else None

    def access_line(self, message: str, fields: Mapping[str, object], code: CodeType, lineno: int) -> str | None:
        """What `format` writes for an INFO record of `message` with `fields` as extras, made at `code`:`lineno`
        now, or None (then: a real record) when the line is not one a template can write.

        The log format's part of the line (level, location, message, service...) is the same for every line of
        one call site while the format stays as it is: it is kept as JSON text, with a hole for the timestamp.
        Per line: the timestamp, and one encoding of the thread's keys with the extras."""
        key = (code, lineno, message)
        templates = self._templates
        if templates is None:
            templates = self._templates = {}
        cached = templates.get(key)
        if cached is None or cached[0] != self.log_format:
            cached = (dict(self.log_format), _Template.build(self, message, _site(code, lineno)))
            if len(templates) >= 64:
                templates.clear()
            templates[key] = cached
        template, encode = cached[1], self._compact_in_use()
        if template is None or encode is None:
            return None
        variable = {**self.thread_safe_get_current_keys(), **fields}
        if not variable.keys().isdisjoint(template.taken):
            return None  # see `_Template.taken`: the record's way
        parts = template.parts
        if template.timed:
            created = time.time()
            stamp = _Stamp(created, int((created - int(created)) * 1000) + 0.0)  # LogRecord's msecs
            asctime = self.formatTime(stamp)  # type: ignore[arg-type]
            if template.asctime_only:  # the default: `"timestamp":"%(asctime)s"`
                parts = [part if type(part) is str else part[0] + encode(asctime) for part in parts]
            else:
                attrs = {**template.site, "created": created, "msecs": stamp.msecs, "asctime": asctime}
                parts = [part if type(part) is str else part[0] + encode(part[1] % attrs) for part in parts]
        text = ",".join(parts)  # type: ignore[arg-type]
        rest = encode({k: v for k, v in variable.items() if v is not None})
        if len(rest) > 2:
            text = f"{text},{rest[1:-1]}"
        trace = self._get_latest_trace_id()
        if trace is not None:
            text = f'{text},"xray_trace_id":{encode(trace)}'
        return "{" + text + "}"


class _Template(NamedTuple):
    """One call site's access line, but for what changes per line. `parts` are JSON members: text, or
    (`"key":`, a %-template of the time) to fill in."""

    parts: list[str | tuple[str, str]]
    timed: bool
    #: every time part is exactly the timestamp (`%(asctime)s`): filled without a %-format.
    asctime_only: bool
    #: names the thread's keys and the extras must not have: the format's keys (overwritten in place), those
    #: `format` sets last, reserved names (a thread key's value would be %-formatted) and the names makeRecord
    #: refuses for an extra (KeyError).
    taken: frozenset[str]
    site: dict[str, object]

    @classmethod
    def build(cls, formatter: _Formatter, message: str, site: dict[str, object]) -> _Template | None:
        """None when the format needs what a template cannot give: another record attribute (thread,
        process...), keys `format` writes last (`xray_trace_id`, `stack_trace` placed in the format), a message
        that is decoded, no `message` key, or JSON other than the compact encoder's."""
        log_format, encode = formatter.log_format, formatter._compact_in_use()
        if (encode is None or "message" not in log_format
                or "xray_trace_id" in log_format or "stack_trace" in log_format
                or message.lstrip()[:1] in _JSON_FIRST):
            return None
        probe = {**site, "created": 0.0, "msecs": 0.0, "asctime": ""}
        parts: list[str | tuple[str, str]] = []
        timed = False
        for key, value in log_format.items():
            if key == "message":
                value = message
            elif value and key in _RESERVED:
                if not isinstance(value, str):
                    return None  # the standard path raises Powertools' ValueError
                try:
                    value % probe
                except (KeyError, TypeError, ValueError):
                    return None
                if any(f"%({name})" in value for name in ("created", "msecs", "asctime")):
                    parts.append((f"{encode(key)}:", value))
                    timed = True
                    continue
                value = value % probe
            if value is not None:
                parts.append(encode({key: value})[1:-1])
        asctime_only = all(type(part) is str or part[1] == "%(asctime)s" for part in parts)
        taken = frozenset(log_format) | {"xray_trace_id", "stack_trace"} | _RESERVED | _NOT_EXTRAS
        return cls(parts, timed, asctime_only, taken, site)


_sites: dict[tuple[CodeType, int], dict[str, object]] = {}


def _site(code: CodeType, lineno: int) -> dict[str, object]:
    """The record attributes a call at `code`:`lineno` fixes (the access log has one call site; a few kept)."""
    site = _sites.get((code, lineno))
    if site is None:
        path = code.co_filename
        filename = os.path.basename(path)
        site = {"name": _target.name, "levelname": "INFO", "levelno": logging.INFO, "pathname": path,
                "filename": filename, "module": os.path.splitext(filename)[0], "lineno": lineno,
                "funcName": code.co_name}
        if len(_sites) < 64:
            _sites[(code, lineno)] = site
    return site


def _tuned(target: Logger) -> Logger:
    formatter = target.registered_formatter
    if type(formatter) is LambdaPowertoolsFormatter:  # a formatter someone configured stays as it is
        formatter.__class__ = _Formatter
        # json.dumps(obj, **options) is JSONEncoder(**options).encode(obj): the options Powertools passes.
        formatter.json_serializer = json.JSONEncoder(default=formatter.json_default, separators=(",", ":"),
                                                     indent=formatter.json_indent, ensure_ascii=False).encode
        if formatter.json_indent is None:
            formatter._compact = formatter.json_serializer  # type: ignore[attr-defined] # now a _Formatter
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
    """`logger.info(message, extra=fields)` for the one line every request writes, and the same text.

    The record names its caller (function and line, the line's `location`) from the calling frame instead of
    walking the stack. When the Logger writes through its one stock StreamHandler with the app's formatter and
    nothing else would write the record (no filters; no ancestor handler but those that drop it, as the Lambda
    runtime's does), the line is built from a template (`_Formatter.access_line`) and written directly: no
    LogRecord, no copy of its ~20 attributes, no handler dispatch. Inside a cached `GET /tasks/{id}` the line
    cost ~37 us before, ~28 us now (A/B in-process; ~8 us in a tight loop, where nothing else evicts it from the
    CPU caches). Any other set-up, or a format the template cannot write: the record goes through the Logger's
    handlers as ever."""
    if not _target.isEnabledFor(logging.INFO):
        return
    caller = sys._getframe(1)
    code = caller.f_code
    handler = _direct_handler()
    if handler is not None:
        line = handler.formatter.access_line(message, fields, code, caller.f_lineno)  # type: ignore[union-attr]
        if line is not None:
            try:
                with handler.lock:  # type: ignore[union-attr] # what Handler.handle holds around emit
                    handler.stream.write(line + handler.terminator)
                    handler.stream.flush()
            except Exception:  # noqa: BLE001 - as StreamHandler.emit: the stream's failure goes to handleError
                handler.handleError(_record(message, fields, code, caller.f_lineno))
            return
    _target.handle(_record(message, fields, code, caller.f_lineno))


def _record(message: str, fields: Mapping[str, object], code: CodeType, lineno: int) -> logging.LogRecord:
    """The INFO record `logger.info(message, extra=fields)` makes at `code`:`lineno`."""
    return _target.makeRecord(_target.name, logging.INFO, code.co_filename, lineno, message, (), None, code.co_name,
                              fields)


def _direct_handler() -> logging.StreamHandler[Any] | None:
    """The one handler the access line may be written to directly, or None (then: the standard path)."""
    handlers = _target.handlers
    if len(handlers) != 1 or _target.filters or _UNRESERVED_RECORD_ATTRS:
        return None
    handler = handlers[0]
    if (type(handler) is not logging.StreamHandler or handler.filters or handler.level > logging.INFO
            or type(handler.formatter) is not _Formatter or handler.lock is None):
        return None
    parent = _target.parent if _target.propagate else None
    while parent is not None:  # a record also goes to every ancestor's handlers until one stops propagating
        for other in parent.handlers:
            if not _drops(other):
                return None
        parent = parent.parent if parent.propagate else None
    return handler


def _drops(handler: logging.Handler) -> bool:
    """Whether `handler` would write none of this Logger's INFO lines. In a Lambda the runtime's handler sits
    on the root logger, and Powertools gave it a SuppressFilter for its service's records: they are not
    written twice, and the access line may still be written directly."""
    if handler.level > logging.INFO:
        return True
    return any(isinstance(f, SuppressFilter) and f.logger in _target.name for f in handler.filters)


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
