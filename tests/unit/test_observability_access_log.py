"""The app's log formatter and the access-log call are cheaper than stock Powertools, never different."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

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


@pytest.fixture
def sole_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[io.StringIO, list[str]]]:
    """The Logger as Lambda has it: one StreamHandler with the app's formatter, nothing above it. Yields the
    stream and the messages of the LogRecords made (the direct access line makes none). The handlers are
    swapped when the test body first logs: pytest attaches its capture handlers to non-propagating loggers
    after fixtures are set up."""
    target = logging.getLogger(logger.name)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    made: list[str] = []
    make = target.makeRecord

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(args[4])
        return make(*args, **kwargs)

    monkeypatch.setattr(target, "propagate", False)
    monkeypatch.setattr(target, "makeRecord", counting)
    monkeypatch.setattr(observability, "_direct_handler", _swapping(monkeypatch, target, handler,
                                                                   observability._direct_handler))
    monkeypatch.setattr(target, "handle", _swapping(monkeypatch, target, handler, target.handle))
    yield stream, made


def _swapping(monkeypatch: pytest.MonkeyPatch, target: logging.Logger, handler: logging.Handler,
              call: Any) -> Any:
    def swapped(*args: Any) -> Any:
        if target.handlers != [handler]:
            monkeypatch.setattr(target, "handlers", [handler])
        return call(*args)
    return swapped


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(text) for text in stream.getvalue().splitlines()]


def without_time_and_place(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k not in ("timestamp", "location")}


def test_the_direct_access_line_is_the_line_logger_info_writes(sole_handler: tuple[io.StringIO, list[str]],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    stream, made = sole_handler
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-abc-def;Parent=1;Sampled=0")  # xray_trace_id, both ways
    fields = {"method": "GET", "route": "/tasks/{task_id}", "status": 200, "duration_ms": 0.5, "note": "é ✓"}
    logger.thread_safe_append_keys(request_id="r-3", user_id="u-3")
    try:
        logger.info("request", extra=fields); line = sys._getframe().f_lineno  # noqa: E702 - same line
        access_log("request", fields); fast_line = sys._getframe().f_lineno  # noqa: E702
    finally:
        logger.thread_safe_clear_keys()
    assert made == ["request"]  # logger.info's record only: the access line was written directly
    slow, fast = lines(stream)
    fn = "test_the_direct_access_line_is_the_line_logger_info_writes"
    assert slow["location"] == f"{fn}:{line}" and fast["location"] == f"{fn}:{fast_line}"
    assert without_time_and_place(fast) == without_time_and_place(slow) and list(fast) == list(slow)
    assert fast["xray_trace_id"] == "1-abc-def" and fast["note"] == "é ✓"
    stamp = datetime.strptime(fast["timestamp"], "%Y-%m-%d %H:%M:%S,%f%z")
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 5


def test_a_log_format_naming_a_record_only_attribute_takes_the_record(
        sole_handler: tuple[io.StringIO, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    stream, made = sole_handler
    formatter = logger.registered_formatter
    monkeypatch.setitem(formatter.log_format, "process", "%(process)d")
    access_log("request", {"status": 200})
    assert made == ["request"]
    assert lines(stream)[0]["process"] == str(os.getpid())


def test_an_extra_named_like_a_record_attribute_fails_as_logger_info_does(
        sole_handler: tuple[io.StringIO, list[str]]) -> None:
    for bad in ({"message": "x"}, {"lineno": 3}):
        with pytest.raises(KeyError, match="overwrite"):
            access_log("request", bad)
        with pytest.raises(KeyError, match="overwrite"):
            logger.info("request", extra=bad)


def test_a_filter_or_a_second_handler_takes_the_standard_path(sole_handler: tuple[io.StringIO, list[str]]) -> None:
    stream, made = sole_handler
    target = logging.getLogger(logger.name)
    logger.info("first")
    handler = target.handlers[0]
    handler.addFilter(lambda record: record.getMessage() != "dropped")
    try:
        access_log("dropped", {"status": 200})
        access_log("kept", {"status": 200})
    finally:
        handler.filters.clear()
    assert made == ["first", "dropped", "kept"] and [line["message"] for line in lines(stream)] == ["first", "kept"]


def test_a_stream_that_fails_goes_to_handle_error_like_stream_handler(
        sole_handler: tuple[io.StringIO, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    stream, made = sole_handler
    logger.info("first")
    handler = logging.getLogger(logger.name).handlers[0]
    errors: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", errors.append)
    monkeypatch.setattr(stream, "write", lambda text: (_ for _ in ()).throw(OSError("pipe closed")))
    access_log("request", {"status": 200})  # does not raise: logging never fails the request
    assert [record.getMessage() for record in errors] == ["request"]


#: thread keys, extras, a format entry to add, whether the access line is written without a record.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[str, Any] | None, bool]] = {
    "the access log's own line": ({}, {"method": "GET", "route": "/x", "status": 200, "duration_ms": 0.2}, None,
                                  True),
    "a thread key overwriting a format key": ({"service": "other"}, {}, None, False),
    "a thread key with a reserved name": ({"name": "%(levelname)s"}, {}, None, False),
    "an extra overwriting a thread key": ({"request_id": "r"}, {"request_id": "mine"}, None, True),
    "None values": ({"user_id": None}, {"status": None, "route": "/x"}, None, True),
    "an extra named xray_trace_id": ({}, {"xray_trace_id": "mine"}, None, False),
    "an extra named stack_trace": ({}, {"stack_trace": "mine"}, None, False),
    "an extra overwriting a format key": ({}, {"service": "extra"}, None, False),
    "an extra overwriting a None format key": ({}, {"sampling_rate": 0.5}, None, False),
    "a static reserved attribute in the format": ({}, {}, ("filename", "%(filename)s/%(module)s/%(levelno)d"), True),
    "a timed attribute in the format": ({}, {}, ("created", "%(created).3f|%(msecs)d"), True),
    "an attribute only a record has": ({}, {}, ("thread", "%(thread)d"), False),
    "an empty format value": ({}, {}, ("blank", ""), True),
    "a constant in the format": ({}, {"n": 1}, ("team", {"name": "ymera", "n": 2}), True),
    "non-JSON types": ({}, {"when": datetime(2026, 1, 2, tzinfo=timezone.utc), "id": uuid.UUID(int=7),
                            "big": 10**20, "ratio": 0.1, "flag": True, "items": [1, "a"], "text": "é"}, None, True),
}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=str)
def test_the_direct_line_matches_the_record_line(variant: str, sole_handler: tuple[io.StringIO, list[str]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    thread_keys, fields, format_entry, direct = VARIANTS[variant]
    stream, made = sole_handler
    logger.info("first")  # the handlers swapped in
    if format_entry is not None:
        monkeypatch.setitem(logger.registered_formatter.log_format, *format_entry)
    logger.thread_safe_append_keys(**{"request_id": "r-4", "user_id": "u-4", **thread_keys})
    try:
        logger.info("request", extra=fields)
        access_log("request", fields)
    finally:
        logger.thread_safe_clear_keys()
    _, slow, fast = (without_time_and_place(line) for line in lines(stream))
    if "created" in fast:  # the two lines' own times
        created, msecs = (float(part) for part in fast.pop("created").split("|"))
        assert abs(created - time.time()) < 5 and 0 <= msecs < 1000 and slow.pop("created")
    if "filename" in fast:
        assert fast["filename"] == "test_observability_access_log.py/test_observability_access_log/20"
    assert fast == slow and list(fast) == list(slow)
    assert made == ["first", "request"] if direct else ["first", "request", "request"]


def test_a_changed_format_or_serializer_is_followed(sole_handler: tuple[io.StringIO, list[str]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The template is per format: a key appended after lines were written shows up in the next one; a
    serializer someone installs writes the line (through the record)."""
    stream, made = sole_handler
    formatter = logger.registered_formatter
    access_log("request", {"status": 1})
    monkeypatch.setitem(formatter.log_format, "added", "yes")
    access_log("request", {"status": 2})
    monkeypatch.setattr(formatter, "json_serializer", lambda log: json.dumps({"custom": log["status"]}))
    access_log("request", {"status": 3})
    first, second, third = lines(stream)
    assert "added" not in first and second["added"] == "yes" and third == {"custom": 3}
    assert made == ["request"]  # only the custom serializer's line needed a record


def test_in_a_lambda_the_runtimes_root_handler_drops_the_line_and_it_is_written_directly(
        sole_handler: tuple[io.StringIO, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lambda runtime puts its handler on the root logger; Powertools gave it a SuppressFilter for the
    service's records. Those records reach it and are dropped, so the access line may skip the record; a root
    handler without that filter would write it too, and then the record goes to both."""
    from aws_lambda_powertools.logging.filters import SuppressFilter

    stream, made = sole_handler
    target = logging.getLogger(logger.name)
    runtime_out = io.StringIO()
    runtime = logging.StreamHandler(runtime_out)
    runtime.addFilter(SuppressFilter(logger.service))
    logger.info("first")  # the handlers swapped in
    monkeypatch.setattr(target, "propagate", True)
    monkeypatch.setattr(logging.root, "handlers", [runtime])
    access_log("request", {"status": 200})
    assert made == ["first"] and runtime_out.getvalue() == ""
    plain_out = io.StringIO()
    monkeypatch.setattr(logging.root, "handlers", [runtime, logging.StreamHandler(plain_out)])
    access_log("request", {"status": 201})
    assert made == ["first", "request"] and "request" in plain_out.getvalue() and runtime_out.getvalue() == ""
    assert [line["status"] for line in lines(stream)[1:]] == [200, 201]
