"""The ingress consumer's two SQS moves besides consuming: reject a message to the ingress DLQ at once,
and delay one (ChangeMessageVisibility). Its role may send only to its own queue's DLQ (infra/template.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: SQS's ceiling for ChangeMessageVisibility.
MAX_VISIBILITY_SECONDS = 12 * 3600


def queue_of(arn: str) -> tuple[str, str]:
    """`arn:aws:sqs:region:account:name` -> (account, name)."""
    parts = arn.split(":")
    return (parts[4] if len(parts) > 5 else ""), parts[-1]


class IngressQueues:
    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._urls: dict[tuple[str, str], str] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _url(self, account: str, name: str) -> str:
        if (account, name) not in self._urls:
            kwargs = {"QueueOwnerAWSAccountId": account} if account else {}
            self._urls[(account, name)] = str(self.client.get_queue_url(QueueName=name, **kwargs)["QueueUrl"])
        return self._urls[(account, name)]

    def reject(self, source_arn: str, body: str, attributes: dict[str, str], reason: str) -> None:
        """Copy the message to `<source>-dlq` with its reason; the caller then reports success (SQS deletes it)."""
        account, name = queue_of(source_arn)
        attrs = {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items() if v}
        attrs["ymera-reject-reason"] = {"DataType": "String", "StringValue": reason}
        self.client.send_message(QueueUrl=self._url(account, f"{name}-dlq"), MessageBody=body or " ",
                                 MessageAttributes=attrs)

    def delay(self, source_arn: str, receipt_handle: str, seconds: int) -> None:
        account, name = queue_of(source_arn)
        self.client.change_message_visibility(QueueUrl=self._url(account, name), ReceiptHandle=receipt_handle,
                                              VisibilityTimeout=max(0, min(seconds, MAX_VISIBILITY_SECONDS)))
