"""The local runner's three SQS calls, lean, for `make run`'s own emulator: ReceiveMessage, DeleteMessageBatch and
ChangeMessageVisibilityBatch as signed AWS JSON 1.0 requests (what boto3 sends SQS) on one keep-alive HTTP
connection per thread. Every other call goes to the boto3 client it wraps.

Why: on AWS the Lambda service polls SQS for a function (its CPU is not the platform's); under `make run` the
runner (infra.local.runner) plays that poller in the functions' process, and botocore's per-call work (the
request model, event hooks, endpoint rules, urllib3) cost ~1.6 ms of CPU for a one-record batch's receive and
delete, most of what the process spent per task besides the handler (issue #14, bench/api_load.py). Here the
same two calls cost ~0.3 ms. The runner's behaviour is unchanged: the same actions, long polls, visibility
timeouts and partial batch deletes, answered by the same emulator.

Used only when `make run` started the embedded moto server itself (`EventSourceRunner` against LocalStack or any
other endpoint keeps boto3: its retries, its error model, its endpoint quirks). Errors read like botocore's: an
error answer raises the class botocore would (`client.exceptions.QueueDoesNotExist`, a `ClientError`) with the
same code and message (`AWS.SimpleQueueService.NonExistentQueue` for a queue that is gone). A dropped
connection is reopened and the call sent once more (each action is safe to repeat: a receive's messages stay
invisible until their timeout, a delete or visibility change of the same handles does the same again).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

#: the actions this client sends itself (the runner's per-invocation calls); anything else is boto3's.
ACTIONS = {"receive_message": "ReceiveMessage", "delete_message_batch": "DeleteMessageBatch",
           "change_message_visibility_batch": "ChangeMessageVisibilityBatch"}
#: above the longest long poll (20 s), as the runner's boto3 client's read timeout is.
READ_TIMEOUT_SECONDS = 30.0
_SIGNED_HEADERS = "host;x-amz-date;x-amz-target"


class LeanSqs:
    """`LeanSqs(boto3_sqs_client)`: the client's endpoint, region and credentials, the runner's calls sent lean."""

    def __init__(self, client: Any, credentials: Any = None) -> None:
        """`credentials`: botocore credentials (default: boto3's default chain, as `sqs_client` builds it)."""
        import boto3

        self._client = client
        endpoint = urlsplit(client.meta.endpoint_url)
        if endpoint.scheme != "http" or endpoint.hostname is None:
            raise ValueError(f"LeanSqs speaks plain HTTP to a local emulator, not {client.meta.endpoint_url!r}")
        self._host, self._port = endpoint.hostname, endpoint.port or 80
        self._host_header = endpoint.netloc
        self._region = client.meta.region_name
        credentials = credentials or boto3.session.Session().get_credentials()
        if credentials is None:
            raise ValueError("no AWS credentials for the local emulator (boto3 would refuse every call too)")
        self._credentials = credentials
        self._local = threading.local()
        self._keys: dict[tuple[str, str], bytes] = {}  # (date, secret key) -> SigV4 signing key

    def __getattr__(self, name: str) -> Any:
        if name in ACTIONS:
            return lambda **params: self.call(ACTIONS[name], params)
        return getattr(self._client, name)

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params, separators=(",", ":")).encode()
        try:
            status, query_error, data = self._send(action, body)
        except (http.client.HTTPException, ConnectionError):
            self._drop()
            status, query_error, data = self._send(action, body)  # once more, on a new connection
        answer = json.loads(data) if data else {}
        if status >= 300:
            raise self._error(action, status, query_error, answer)
        return answer

    def _error(self, action: str, status: int, query_error: str | None, answer: dict[str, Any]) -> ClientError:
        """What botocore raises for an AWS JSON error answer of SQS: the legacy code (`x-amzn-query-error`,
        e.g. `AWS.SimpleQueueService.NonExistentQueue`) as `Code`, the modeled exception class
        (`client.exceptions.QueueDoesNotExist`, a ClientError) from the answer's `__type`."""
        query_code = str(answer.get("__type") or "InternalError").rsplit("#", 1)[-1]
        code = query_error.split(";", 1)[0] if query_error else query_code
        message = str(answer.get("message") or answer.get("Message") or "")
        error = {"Error": {"Code": code, "Message": message, "QueryErrorCode": query_code},
                 "ResponseMetadata": {"HTTPStatusCode": status}}
        return self._client.exceptions.from_code(query_code)(error, action)

    def _send(self, action: str, body: bytes) -> tuple[int, str | None, bytes]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self._host, self._port, timeout=READ_TIMEOUT_SECONDS)
        try:
            conn.request("POST", "/", body, self._headers(action, body))
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self._drop()
            raise
        if response.will_close:
            self._drop()
        return response.status, response.getheader("x-amzn-query-error"), data

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _headers(self, action: str, body: bytes) -> dict[str, str]:
        """SigV4 headers, as botocore signs an SQS JSON request (the emulator does not check; the region and
        access key in the credential scope are what it reads)."""
        creds = self._credentials.get_frozen_credentials()  # refreshable credentials stay fresh
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        date = amz_date[:8]
        target = "AmazonSQS." + action
        canonical = "\n".join(("POST", "/", "", f"host:{self._host_header}", f"x-amz-date:{amz_date}",
                               f"x-amz-target:{target}", "", _SIGNED_HEADERS, hashlib.sha256(body).hexdigest()))
        scope = f"{date}/{self._region}/sqs/aws4_request"
        to_sign = "\n".join(("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()))
        signature = hmac.new(self._signing_key(date, creds.secret_key), to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target, "X-Amz-Date": amz_date,
                   "Authorization": f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                                    f"SignedHeaders={_SIGNED_HEADERS}, Signature={signature}"}
        if creds.token:
            headers["X-Amz-Security-Token"] = creds.token  # sent, not signed: the emulator does not check
        return headers

    def _signing_key(self, date: str, secret: str) -> bytes:
        key = self._keys.get((date, secret))
        if key is None:
            key = ("AWS4" + secret).encode()
            for part in (date, self._region, "sqs", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            if len(self._keys) > 8:
                self._keys.clear()
            self._keys[(date, secret)] = key
        return key

