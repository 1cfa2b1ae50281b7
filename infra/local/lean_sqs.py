"""The local runner's three SQS calls, lean, for `make run`'s own emulator: ReceiveMessage, DeleteMessageBatch and
ChangeMessageVisibilityBatch as signed AWS JSON 1.0 requests (what boto3 sends SQS) on one keep-alive HTTP
connection per thread (`chalicelib.messaging.sqs_json`). Every other call goes to the boto3 client it wraps.

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

from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from chalicelib.messaging.sqs_json import SqsJson, SqsJsonError

#: the actions this client sends itself (the runner's per-invocation calls); anything else is boto3's.
ACTIONS = {"receive_message": "ReceiveMessage", "delete_message_batch": "DeleteMessageBatch",
           "change_message_visibility_batch": "ChangeMessageVisibilityBatch"}
#: above the longest long poll (20 s), as the runner's boto3 client's read timeout is.
READ_TIMEOUT_SECONDS = 30.0


class LeanSqs:
    """`LeanSqs(boto3_sqs_client)`: the client's endpoint, region and credentials, the runner's calls sent lean."""

    def __init__(self, client: Any, credentials: Any = None) -> None:
        """`credentials`: botocore credentials (default: boto3's default chain, as `sqs_client` builds it)."""
        if urlsplit(client.meta.endpoint_url).scheme != "http":
            raise ValueError(f"LeanSqs speaks plain HTTP to a local emulator, not {client.meta.endpoint_url!r}")
        self._client = client
        self._json = SqsJson.beside(client, READ_TIMEOUT_SECONDS, credentials)

    def __getattr__(self, name: str) -> Any:
        if name in ACTIONS:
            return lambda **params: self.call(ACTIONS[name], params)
        return getattr(self._client, name)

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._json.call(action, params)
        except SqsJsonError as exc:
            raise self._error(exc) from None

    def _error(self, exc: SqsJsonError) -> ClientError:
        """What botocore raises for an AWS JSON error answer of SQS: the legacy code (`x-amzn-query-error`,
        e.g. `AWS.SimpleQueueService.NonExistentQueue`) as `Code`, the modeled exception class
        (`client.exceptions.QueueDoesNotExist`, a ClientError) from the answer's `__type`."""
        error = {"Error": {"Code": exc.code, "Message": exc.message, "QueryErrorCode": exc.query_code},
                 "ResponseMetadata": {"HTTPStatusCode": exc.status}}
        return self._client.exceptions.from_code(exc.query_code)(error, exc.action)  # type: ignore[no-any-return]
