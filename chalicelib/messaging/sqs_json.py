"""SQS's AWS JSON 1.0 protocol without botocore's per-call machinery: a signed (SigV4) POST on one keep-alive
connection per thread, for the few calls made once per task.

Why: botocore's request model, event hooks, endpoint rules and urllib3 cost more CPU per call than everything
else `POST /tasks` does in the API besides its SQL (issue #14: ~30 % of the API process under `bench/api_load.py`;
~0.8 ms of CPU a `SendMessageBatch` on a 2-core machine, against ~0.15 ms here). The request is the one boto3
sends SQS (`X-Amz-Target: AmazonSQS.<Action>`, `application/x-amz-json-1.0`), signed as botocore signs it: the
unit tests check the `Authorization` header against botocore's `SigV4Auth` for the same request, with and
without a session token.

What this is not: a client. No retries, no endpoint rules, no error model beyond `SqsJsonError` (the answer's
status, `__type` and message). Its users keep a boto3 client beside it for everything else and fall back to it
when a call here fails (`chalicelib.messaging.sqs.SqsPublisher`, `infra.local.lean_sqs`).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit


class SqsJsonError(Exception):
    """An error answer: `status` (HTTP), `code` (the legacy query code from `x-amzn-query-error`, e.g.
    `AWS.SimpleQueueService.NonExistentQueue`, else the `__type`'s name), `query_code` (the `__type`'s name, e.g.
    `QueueDoesNotExist`) and `message`."""

    def __init__(self, action: str, status: int, code: str, query_code: str, message: str) -> None:
        super().__init__(f"{action}: {status} {code}: {message}")
        self.action, self.status, self.code, self.query_code, self.message = action, status, code, query_code, message


class SqsJson:
    """`SqsJson(endpoint_url, region, credentials)`: botocore credentials (refreshable ones are read fresh for
    every call); `endpoint_url` http:// (an emulator) or https:// (AWS: certificates checked against botocore's
    CA bundle)."""

    def __init__(self, endpoint_url: str, region: str, credentials: Any, timeout: float) -> None:
        endpoint = urlsplit(endpoint_url)
        if endpoint.scheme not in ("http", "https") or endpoint.hostname is None:
            raise ValueError(f"not an SQS endpoint: {endpoint_url!r}")
        if credentials is None:
            raise ValueError("no AWS credentials (boto3 would refuse every call too)")
        self._https = endpoint.scheme == "https"
        self._host = endpoint.hostname
        self._port = endpoint.port or (443 if self._https else 80)
        self._host_header = endpoint.netloc
        self._region = region
        self._credentials = credentials
        self._timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        self._local = threading.local()
        self._keys: dict[tuple[str, str], bytes] = {}  # (date, secret key) -> SigV4 signing key

    @classmethod
    def beside(cls, client: Any, timeout: float, credentials: Any = None) -> SqsJson:
        """One that sends where the boto3 SQS client `client` sends, in its region, with `credentials` (default:
        boto3's default chain, the one `boto3.client` resolved for `client`)."""
        import boto3

        creds = credentials or boto3.session.Session().get_credentials()
        return cls(client.meta.endpoint_url, client.meta.region_name, creds, timeout)

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """The answer of `action` (`SendMessageBatch`, ...) as a dict; `SqsJsonError` for an error answer;
        `OSError`/`http.client.HTTPException` when no answer came (a dropped keep-alive connection is reopened
        and the request sent once more first)."""
        body = json.dumps(params, separators=(",", ":")).encode()
        try:
            status, query_error, data = self._send(action, body)
        except (http.client.HTTPException, ConnectionError):
            status, query_error, data = self._send(action, body)  # once more, on a new connection
        answer = json.loads(data) if data else {}
        if status >= 300:
            query_code = str(answer.get("__type") or "InternalError").rsplit("#", 1)[-1]
            code = query_error.split(";", 1)[0] if query_error else query_code
            raise SqsJsonError(action, status, code, query_code,
                               str(answer.get("message") or answer.get("Message") or ""))
        return answer

    def close(self) -> None:
        """Close this thread's connection (the next call opens a new one)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _send(self, action: str, body: bytes) -> tuple[int, str | None, bytes]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        try:
            conn.request("POST", "/", body, self.headers(action, body))
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, response.getheader("x-amzn-query-error"), data

    def _connect(self) -> http.client.HTTPConnection:
        if not self._https:
            return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        if self._ssl is None:
            from botocore.httpsession import where

            self._ssl = ssl.create_default_context(cafile=where())
        return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._ssl)

    def headers(self, action: str, body: bytes, amz_date: str | None = None) -> dict[str, str]:
        """The request's headers, SigV4-signed as botocore signs them (`amz_date`: the signing time,
        `%Y%m%dT%H%M%SZ`; default now)."""
        creds = self._credentials.get_frozen_credentials()  # refreshable credentials stay fresh
        amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        date = amz_date[:8]
        target = "AmazonSQS." + action
        headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target, "X-Amz-Date": amz_date}
        signed = [("content-type", headers["Content-Type"]), ("host", self._host_header),
                  ("x-amz-date", amz_date)]
        if creds.token:  # signed, as botocore does: AWS refuses an unsigned token for some services
            headers["X-Amz-Security-Token"] = creds.token
            signed.append(("x-amz-security-token", creds.token))
        signed.append(("x-amz-target", target))
        names = ";".join(name for name, _ in signed)
        canonical = "\n".join(("POST", "/", "", *(f"{name}:{value}" for name, value in signed), "", names,
                               hashlib.sha256(body).hexdigest()))
        scope = f"{date}/{self._region}/sqs/aws4_request"
        to_sign = "\n".join(("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()))
        signature = hmac.new(self._signing_key(date, creds.secret_key), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                                    f"SignedHeaders={names}, Signature={signature}")
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
