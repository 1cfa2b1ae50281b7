"""chalicelib.messaging.sqs_json and SqsPublisher's lean send: the request is signed exactly as botocore signs it
(so AWS takes it as it takes boto3's), the messages arrive as boto3's would, and a lean call that fails falls
back to boto3 without losing the batch."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from chalicelib.messaging.sqs import SqsPublisher
from chalicelib.messaging.sqs_json import SqsJson, SqsJsonError
from infra.local.emulator import sqs_client, start_moto
from tests.unit.emulator_support import emulator_env

PREFIX = "ymera-leansend"
STAMP = "20261204T013000Z"


@pytest.mark.parametrize("endpoint", ["https://sqs.eu-west-1.amazonaws.com", "http://127.0.0.1:4566",
                                      "https://sqs.eu-west-1.amazonaws.com:8443"])
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////token+/="])
def test_the_signature_is_the_one_botocore_computes_for_the_same_request(endpoint: str, token: str | None) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    lean = SqsJson(endpoint, "eu-west-1", creds, timeout=1)
    body = b'{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/q","Entries":[{"Id":"a","MessageBody":"{}"}]}'
    ours = lean.headers("SendMessageBatch", body, amz_date=STAMP)

    request = AWSRequest(method="POST", url=endpoint + "/", data=body,
                         headers={"Content-Type": ours["Content-Type"], "X-Amz-Target": ours["X-Amz-Target"]})
    moment = datetime.datetime.strptime(STAMP, "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
        SigV4Auth(creds, "sqs", "eu-west-1").add_auth(request)

    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"] == STAMP
    assert ours.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token") == token


def test_a_refreshed_secret_signs_with_a_new_key() -> None:
    creds = mock.Mock()
    creds.get_frozen_credentials.return_value = Credentials("AKID", "one")
    lean = SqsJson("http://127.0.0.1:1", "us-east-1", creds, timeout=1)
    first = lean.headers("SendMessageBatch", b"{}", amz_date=STAMP)["Authorization"]
    creds.get_frozen_credentials.return_value = Credentials("AKID", "two")
    assert lean.headers("SendMessageBatch", b"{}", amz_date=STAMP)["Authorization"] != first


def test_an_endpoint_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an SQS endpoint"):
        SqsJson("ftp://example.com", "us-east-1", Credentials("a", "b"), timeout=1)
    with pytest.raises(ValueError, match="no AWS credentials"):
        SqsJson("http://127.0.0.1:1", "us-east-1", None, timeout=1)


@pytest.fixture(scope="module")
def boto() -> Iterator[Any]:
    """A boto3 SQS client on an emulator with make run's SQS front."""
    with emulator_env():
        endpoint = start_moto(fast_sqs=True)
        try:
            yield sqs_client(endpoint.url)
        finally:
            endpoint.stop()


def _publisher(boto: Any, lean_send: str = "auto") -> SqsPublisher:
    return SqsPublisher(lambda: boto, PREFIX, lean_send=lean_send, timeout=2)


def _queue(boto: Any, agent_type: str) -> str:
    return str(boto.create_queue(QueueName=f"{PREFIX}-agent-{agent_type}")["QueueUrl"])


def _bodies(boto: Any, url: str) -> list[str]:
    got = boto.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    return sorted(m["Body"] for m in got)


def test_a_lean_batch_arrives_as_boto3_would_send_it(boto: Any) -> None:
    url = _queue(boto, "lean-arrives")
    publisher = _publisher(boto)
    assert publisher.lean() is not None  # auto: the emulator is plain HTTP
    failed = publisher.publish("lean-arrives", [(f"m{i}", {"task_id": f"t{i}", "n": i}) for i in range(12)])
    assert failed == set()
    received = _bodies(boto, url) + _bodies(boto, url)
    assert len(received) == 12 and '{"task_id": "t0", "n": 0}' in received


def test_a_lean_send_that_cannot_connect_falls_back_to_boto3_for_good(boto: Any,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    url = _queue(boto, "lean-fallback")
    publisher = _publisher(boto)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    publisher._lean = SqsJson(f"http://127.0.0.1:{port}", "us-east-1", Credentials("a", "b"), timeout=1)
    publisher._lean_decided = True
    assert publisher.publish("lean-fallback", [("m1", {"task_id": "t1"})]) == set()
    assert _bodies(boto, url) == ['{"task_id": "t1"}']
    assert publisher.lean() is None
    assert "boto3 sends from now on" in caplog.text


def test_a_failure_both_share_raises_boto3s_error_and_keeps_the_lean_sender(boto: Any) -> None:
    publisher = _publisher(boto)
    lean = publisher.lean()
    with pytest.raises(SqsJsonError) as direct:
        assert lean is not None
        lean.call("SendMessageBatch", {"QueueUrl": boto.meta.endpoint_url + "/123456789012/gone",
                                       "Entries": [{"Id": "a", "MessageBody": "x"}]})
    assert direct.value.status == 400 and direct.value.query_code == "QueueDoesNotExist"
    publisher._urls["ymera-leansend-agent-gone"] = boto.meta.endpoint_url + "/123456789012/gone"
    with pytest.raises(boto.exceptions.QueueDoesNotExist):
        publisher.publish("gone", [("m1", {"task_id": "t1"})])
    assert publisher.lean() is lean


@pytest.mark.parametrize(("mode", "endpoint", "lean"), [
    ("auto", "http://127.0.0.1:4566", True), ("auto", "https://sqs.us-east-1.amazonaws.com", False),
    ("on", "https://sqs.us-east-1.amazonaws.com", True), ("off", "http://127.0.0.1:4566", False)])
def test_which_endpoints_get_the_lean_send(mode: str, endpoint: str, lean: bool) -> None:
    client = mock.Mock()
    client.meta.endpoint_url, client.meta.region_name = endpoint, "us-east-1"
    with mock.patch("boto3.session.Session.get_credentials", return_value=Credentials("a", "b")):
        assert (SqsPublisher(lambda: client, PREFIX, lean_send=mode).lean() is not None) is lean


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="lean_send"):
        SqsPublisher(lambda: None, PREFIX, lean_send="sometimes")
