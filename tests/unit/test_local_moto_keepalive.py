"""infra.local.emulator.start_moto serves on kept-alive connections (keep_alive_handler): werkzeug's server closed
every connection after its response, so each SQS call of `make run` paid a connect and a server thread."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import pytest

from infra.local.emulator import AwsEndpoint, sqs_client, start_moto

LIST_QUEUES = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues",
               "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, "
                                "SignedHeaders=host, Signature=x"}


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEndpoint]:
    for var in ("MOTO_PORT", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(var, "")  # start_moto exports both: recorded here so they are undone after
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    endpoint = start_moto()
    try:
        yield endpoint
    finally:
        endpoint.stop()


def _conn(endpoint: AwsEndpoint) -> http.client.HTTPConnection:
    host, port = endpoint.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=5)


def test_one_connection_carries_many_calls(moto: AwsEndpoint) -> None:
    conn = _conn(moto)
    conn.connect()
    first_socket = conn.sock
    for _ in range(3):
        conn.request("POST", "/", body=b"{}", headers=LIST_QUEUES)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        assert response.getheader("Connection") != "close"
        assert int(response.getheader("Content-Length") or -1) == len(body)
        assert "QueueUrls" in json.loads(body) or json.loads(body) == {}
        assert conn.sock is first_socket  # the same connection: never closed by the server
    conn.close()


def test_a_chunked_request_still_works_and_closes_its_connection(moto: AwsEndpoint) -> None:
    conn = _conn(moto)
    conn.request("POST", "/", body=iter([b"{", b"}"]), headers={**LIST_QUEUES, "Transfer-Encoding": "chunked"},
                 encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("Connection") == "close"  # werkzeug's own path, as before
    conn.close()


def test_boto3_reuses_its_connection(moto: AwsEndpoint) -> None:
    sqs = sqs_client(moto.url)
    url = sqs.create_queue(QueueName="keepalive")["QueueUrl"]
    pool = sqs._endpoint.http_session._manager.connection_from_url(moto.url)  # urllib3's pool for the endpoint

    def local_ports() -> set[int]:
        return {c.sock.getsockname()[1] for c in list(pool.pool.queue) if c is not None and c.sock is not None}

    sqs.send_message(QueueUrl=url, MessageBody="one")
    first = local_ports()
    assert len(first) == 1  # still open after the call
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
        assert local_ports() == first  # the same TCP connection every time
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)["Messages"]
    assert len(got) == 6


def test_a_client_that_hangs_up_mid_body_costs_only_its_connection(moto: AwsEndpoint) -> None:
    host, port = moto.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    conn = _conn(moto)
    conn.request("POST", "/", body=b"{}", headers=LIST_QUEUES)
    assert conn.getresponse().status == 200
    conn.close()
