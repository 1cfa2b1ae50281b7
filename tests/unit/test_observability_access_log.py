"""The app's log formatter and the access-log call are cheaper than stock Powertools, never different."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from datetime import datetime, timezone

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from chalicelib import observability
from chalicelib.observability import access_log, logger


def record(msg: object, *args: object, extra: dict[str, object] | None = None,
           exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.getLogger(logger.name).makeRecord(logger.name, logging.INFO, __file__, 42, msg, args, exc_info,
                                                     "some_function", extra)


MESSAGES = ["request", "  padded text", "", "{\"a\": 1}", "[1, 2]", "123", "-1.5", "true", "null", " NaN",
            "{not json", "ünïcode ✓", {"a": "dict message"}, 7]


@pytest.mark.parametrize("msg", MESSAGES, ids=repr)
def test_the_formatter_writes_what_powertools_writes(msg: object) -> None:
    ours = logger.registered_formatter
    assert isinstance(ours, observability._Formatter)
    stock = LambdaPowertoolsFormatter(service="ymera", sampling_rate=None)
    stock.log_format = dict(ours.log_format)  # with whatever keys earlier tests' handlers appended
    extra = {"route": "/tasks/{task_id}", "status": 200, "when": datetime(2026, 1, 2, tzinfo=timezone.utc),
             "id": uuid.UUID(int=5), "text": "é"}  # the last three go through json_default / non-ASCII
    logger.thread_safe_append_keys(request_id="r-1", user_id="u-1")
    try:
        overriding = {"service": "other", "request_id": "r-extra", "location": "nowhere"}
        for rec in (record(msg, extra=extra), record(msg), record(msg, exc=True), record("n=%s", 3),
                    record(msg, extra=overriding)):
            assert ours.format(rec) == stock.format(rec)
    finally:
        logger.thread_safe_clear_keys()


@pytest.mark.parametrize("options", [{}, {"utc": True}, {"datefmt": "%H:%M:%S.%F"}, {"use_rfc3339": True}],
                         ids=repr)
def test_timestamps_are_powertools_timestamps_across_seconds(options: dict[str, object]) -> None:
    """The per-second strftime cache: the same text as Powertools for milliseconds within one second, the next
    second, an earlier second again, and a clock far away (another day, and a DST offset for local time)."""
    ours, stock = observability._Formatter(service="ymera", **options), LambdaPowertoolsFormatter(service="ymera",
                                                                                                 **options)
    base = 1_780_000_000.0  # a summer date: local zones with DST show their summer offset
    for created in (base + 0.001, base + 0.999, base + 1.0, base + 1.5, base + 0.25, base - 200 * 86400 + 0.5,
                    base + 0.0005):
        rec = record("request")
        rec.created, rec.msecs = created, (created - int(created)) * 1000
        assert ours.formatTime(rec) == stock.formatTime(rec)
        assert ours.format(rec) == stock.format(rec)


def test_the_formatter_refuses_what_powertools_refuses() -> None:
    ours, stock = observability._Formatter(service="ymera"), LambdaPowertoolsFormatter(service="ymera")
    for formatter in (ours, stock):
        formatter.log_format["level"] = 5  # a reserved attribute that is not a %-template
        with pytest.raises(ValueError, match="type 'str'"):
            formatter.format(record("request"))


def test_access_log_is_the_line_logger_info_writes(json_logs: io.StringIO) -> None:
    fields = {"method": "GET", "route": "/tasks/{task_id}", "status": 200, "duration_ms": 0.5}
    logger.thread_safe_append_keys(request_id="r-2", user_id="u-2")
    try:
        logger.info("request", extra=fields); line = sys._getframe().f_lineno  # noqa: E702 - same line
        access_log("request", fields); fast_line = sys._getframe().f_lineno  # noqa: E702
    finally:
        logger.thread_safe_clear_keys()
    slow, fast = (json.loads(text) for text in json_logs.getvalue().splitlines())
    fn = "test_access_log_is_the_line_logger_info_writes"
    assert slow.pop("location") == f"{fn}:{line}" and fast.pop("location") == f"{fn}:{fast_line}"
    slow.pop("timestamp"), fast.pop("timestamp")
    assert fast == slow
    assert list(fast) == list(slow)  # same fields, same order
    assert fast["request_id"] == "r-2" and fast["status"] == 200 and fast["message"] == "request"


def test_access_log_honours_the_level(json_logs: io.StringIO) -> None:
    target = logging.getLogger(logger.name)
    level = target.level
    target.setLevel(logging.WARNING)
    try:
        access_log("request", {"status": 200})
    finally:
        target.setLevel(level)
    assert json_logs.getvalue() == ""
