"""infra.local.sqs_front: make run's emulator answers SendMessageBatch and DeleteMessageBatch on moto's own backend,
with moto's answers; everything it does not handle exactly like moto goes to moto's own path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infra.local.emulator import sqs_client, start_moto
from tests.unit.emulator_support import emulator_env


@pytest.fixture(scope="module")
def endpoints() -> Iterator[tuple[Any, Any]]:
    """(fronted client, plain moto client): two servers of this process, hence one moto backend."""
    with emulator_env():
        plain = start_moto()
        fronted = start_moto(fast_sqs=True)
        try:
            yield sqs_client(fronted.url), sqs_client(plain.url)
        finally:
            fronted.stop()
            plain.stop()


@pytest.fixture
def moto_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The batch actions moto's own response handler ran (the front's delegations, and the plain server's)."""
    from moto.sqs.responses import SQSResponse

    calls: list[str] = []
    for action in ("send_message_batch", "delete_message_batch", "receive_message"):
        real = getattr(SQSResponse, action)
        monkeypatch.setattr(SQSResponse, action,
                            lambda self, _real=real, _name=action: (calls.append(_name), _real(self))[1])
    return calls


def _queue(client: Any, name: str, **attributes: str) -> str:
    return str(client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def _receive_all(client: Any, url: str) -> list[dict[str, Any]]:
    got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                 MessageSystemAttributeNames=["All"]).get("Messages", [])
    return list(got)


def test_a_batch_is_sent_on_the_fast_path_and_moto_delivers_it(endpoints: tuple[Any, Any],
                                                              moto_calls: list[str]) -> None:
    fast, plain = endpoints
    url = _queue(plain, "front-send")
    sent = fast.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": '{"n": 1}'}, {"Id": "b", "MessageBody": '{"n": 2}', "MessageGroupId": "owner-1"},
        {"Id": "c", "MessageBody": "é" * 10}])  # botocore checks each MD5OfMessageBody against what it sent
    assert moto_calls == []  # answered by the front
    assert sorted(e["Id"] for e in sent["Successful"]) == ["a", "b", "c"] and sent.get("Failed", []) == []
    got = _receive_all(plain, url)
    moto_calls.clear()
    assert sorted(m["Body"] for m in got) == sorted(['{"n": 1}', '{"n": 2}', "é" * 10])
    assert {m["MessageId"] for m in got} == {e["MessageId"] for e in sent["Successful"]}
    grouped = next(m for m in got if m["Body"] == '{"n": 2}')
    assert grouped["Attributes"].get("MessageGroupId") == "owner-1"


def test_a_delete_batch_answers_as_moto_does(endpoints: tuple[Any, Any], moto_calls: list[str]) -> None:
    fast, plain = endpoints
    url = _queue(plain, "front-delete")
    plain.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(4)])
    handles = [m["ReceiptHandle"] for m in _receive_all(plain, url)]
    assert len(handles) == 4
    moto_calls.clear()
    ours = fast.delete_message_batch(QueueUrl=url, Entries=[{"Id": "ok", "ReceiptHandle": handles[0]},
                                                             {"Id": "bad", "ReceiptHandle": "not-a-handle"}])
    assert moto_calls == []
    theirs = plain.delete_message_batch(QueueUrl=url, Entries=[{"Id": "ok", "ReceiptHandle": handles[1]},
                                                                {"Id": "bad", "ReceiptHandle": "not-a-handle"}])
    assert moto_calls == ["delete_message_batch"]
    for answer in (ours, theirs):
        answer.pop("ResponseMetadata")
    assert ours == theirs
    assert ours["Successful"] == [{"Id": "ok"}] and ours["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    fast.delete_message_batch(QueueUrl=url, Entries=[{"Id": "x", "ReceiptHandle": handles[2]},
                                                     {"Id": "y", "ReceiptHandle": handles[3]}])
    attributes = plain.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    counts = (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"])
    assert counts == ("0", "0")


@pytest.mark.parametrize("entries, code", [
    ([{"Id": "same", "MessageBody": "1"}, {"Id": "same", "MessageBody": "2"}], "BatchEntryIdsNotDistinct"),
    ([{"Id": "bad id!", "MessageBody": "1"}], "InvalidBatchEntryId"),
    ([{"Id": "big", "MessageBody": "x" * (1024 * 1024 + 1)}], "BatchRequestTooLong"),
])
def test_an_invalid_batch_gets_motos_error_and_nothing_is_sent(endpoints: tuple[Any, Any], moto_calls: list[str],
                                                               entries: list[dict[str, str]], code: str) -> None:
    fast, plain = endpoints
    url = _queue(plain, f"front-invalid-{code.lower()}")
    with pytest.raises(ClientError) as ours:
        fast.send_message_batch(QueueUrl=url, Entries=entries)
    with pytest.raises(ClientError) as theirs:
        plain.send_message_batch(QueueUrl=url, Entries=entries)
    assert ours.value.response["Error"]["Code"] == theirs.value.response["Error"]["Code"]
    assert code in ours.value.response["Error"]["Code"] or code in str(ours.value)
    assert moto_calls == ["send_message_batch", "send_message_batch"]  # the front delegated
    assert _receive_all(plain, url) == []


def test_what_the_front_does_not_handle_goes_to_moto(endpoints: tuple[Any, Any], moto_calls: list[str]) -> None:
    fast, plain = endpoints
    fifo = _queue(plain, "front-order.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    assert fast.send_message_batch(QueueUrl=fifo, Entries=[{"Id": "a", "MessageBody": "1", "MessageGroupId": "g"}]
                                   )["Successful"][0]["Id"] == "a"
    url = _queue(plain, "front-attributes")
    with_attributes = fast.send_message_batch(QueueUrl=url, Entries=[{
        "Id": "a", "MessageBody": "1", "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}}])
    assert with_attributes["Successful"][0]["MD5OfMessageAttributes"]
    delayed = fast.send_message_batch(QueueUrl=url, Entries=[{"Id": "d", "MessageBody": "2", "DelaySeconds": 1}])
    assert delayed["Successful"][0]["Id"] == "d"
    assert moto_calls == ["send_message_batch"] * 3
    with pytest.raises(ClientError) as missing:
        fast.send_message_batch(QueueUrl=url.rsplit("/", 1)[0] + "/no-such-queue",
                                Entries=[{"Id": "a", "MessageBody": "1"}])
    assert "NonExistentQueue" in str(missing.value) or "QueueDoesNotExist" in str(missing.value)


def _shape(message: dict[str, Any]) -> dict[str, Any]:
    """A received message without what differs between two messages (ids, handles, clocks)."""
    attributes = dict(message.get("Attributes", {}))
    for varying in ("SentTimestamp", "ApproximateFirstReceiveTimestamp"):
        assert attributes.pop(varying, "0").isdigit()
    return {**{k: v for k, v in message.items() if k not in ("MessageId", "ReceiptHandle", "Attributes")},
            "Attributes": attributes}


@pytest.mark.parametrize("request_names", [
    {"AttributeNames": ["All"], "MessageAttributeNames": ["All"]},  # what the local runner asks for
    {"MessageSystemAttributeNames": ["ApproximateReceiveCount", "MessageGroupId"]},
    {},
])
def test_a_receive_answers_as_moto_does(endpoints: tuple[Any, Any], moto_calls: list[str],
                                        request_names: dict[str, list[str]]) -> None:
    fast, plain = endpoints
    url = _queue(plain, f"front-receive-{len(request_names)}-{sum(map(len, request_names.values()))}")
    attributes = {"kind": {"DataType": "String", "StringValue": "task"}, "n": {"DataType": "Number",
                                                                                "StringValue": "7"}}
    for _ in range(2):  # moto's path sends: message attributes are not the front's
        plain.send_message(QueueUrl=url, MessageBody='{"task_id": "x"}', MessageAttributes=attributes,
                           MessageGroupId="owner-1")
    moto_calls.clear()
    ours = fast.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0, **request_names)
    assert moto_calls == []
    theirs = plain.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0, **request_names)
    assert moto_calls == ["receive_message"]
    assert len(ours["Messages"]) == len(theirs["Messages"]) == 1
    assert _shape(ours["Messages"][0]) == _shape(theirs["Messages"][0])
    assert "Messages" not in fast.receive_message(QueueUrl=url, WaitTimeSeconds=0)  # both in flight now


def test_visibility_and_the_receive_count_as_on_motos_path(endpoints: tuple[Any, Any]) -> None:
    fast, plain = endpoints
    url = _queue(plain, "front-recount")
    fast.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "again"}])
    counts = []
    for client in (fast, fast, plain, fast):  # visible again at once (VisibilityTimeout 0), each receive counted
        got = client.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=0, AttributeNames=["All"])
        counts.append(got["Messages"][0]["Attributes"]["ApproximateReceiveCount"])
    assert counts == ["1", "2", "3", "4"]
    fast.receive_message(QueueUrl=url, WaitTimeSeconds=0)  # the queue's visibility timeout (30 s): in flight
    assert "Messages" not in fast.receive_message(QueueUrl=url, WaitTimeSeconds=0)


def test_a_long_poll_on_the_front_returns_when_a_message_arrives(endpoints: tuple[Any, Any]) -> None:
    import threading
    import time

    fast, plain = endpoints
    url = _queue(plain, "front-long-poll")
    timer = threading.Timer(0.3, lambda: plain.send_message(QueueUrl=url, MessageBody="late"))
    started = time.monotonic()
    timer.start()
    try:
        got = fast.receive_message(QueueUrl=url, WaitTimeSeconds=5, MaxNumberOfMessages=10)
    finally:
        timer.join()
    assert [m["Body"] for m in got["Messages"]] == ["late"]
    assert 0.25 <= time.monotonic() - started < 3


@pytest.mark.parametrize("params", [{"MaxNumberOfMessages": 11}, {"WaitTimeSeconds": 21},
                                    {"VisibilityTimeout": 43201}])
def test_an_out_of_range_receive_gets_motos_error(endpoints: tuple[Any, Any], moto_calls: list[str],
                                                  params: dict[str, int]) -> None:
    fast, plain = endpoints
    url = _queue(plain, "front-receive-range")
    errors = []
    for client in (fast, plain):
        with pytest.raises(ClientError) as caught:
            client.receive_message(QueueUrl=url, **params)
        errors.append(caught.value.response["Error"]["Code"])
    assert errors[0] == errors[1]
    assert moto_calls == ["receive_message", "receive_message"]


def test_a_queue_holding_binary_attributes_is_received_by_moto(endpoints: tuple[Any, Any],
                                                               moto_calls: list[str]) -> None:
    fast, plain = endpoints
    url = _queue(plain, "front-binary")
    plain.send_message(QueueUrl=url, MessageBody="b",
                       MessageAttributes={"blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    moto_calls.clear()
    got = fast.receive_message(QueueUrl=url, WaitTimeSeconds=0, MessageAttributeNames=["All"])
    assert got["Messages"][0]["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01"
    assert moto_calls == ["receive_message"]
