"""Property: no body, signed or not, makes the ingress handler raise out of its handler."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.container import Container
from functions.ingress_consumer import handler
from tests.integration.conftest import PREFIX, Api, FakeContext
from tests.integration.test_ingress import setup_producer
from tests.integration.test_ingress import sign as producer_sign

ARN = f"arn:aws:sqs:us-east-1:123456789012:{PREFIX}-ingress"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)
FIELDS = st.fixed_dictionaries({}, optional={
    "schema_version": st.sampled_from([1, 2, "1", None, True, 1.0]) | json_values,
    "agent_type": st.sampled_from(["validation", "nope"]) | json_values,
    "title": st.text(max_size=30) | json_values,
    "priority": st.sampled_from(["low", "normal", "urgent"]) | json_values,
    "input_data": json_values,
    "description": st.text(max_size=30) | json_values,
    "idempotency_key": st.text(max_size=20) | json_values,
    "correlation_id": st.text(max_size=20) | json_values,
})
BODIES = json_values.map(json.dumps) | FIELDS.map(json.dumps) | st.text(max_size=60)


def event(body: str, attributes: dict[str, str]) -> dict[str, Any]:
    return {"Records": [{
        "messageId": "m-1", "receiptHandle": "rh-1", "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000", "SenderId": "t",
                       "ApproximateFirstReceiveTimestamp": "1700000000000"},
        "messageAttributes": {k: {"stringValue": v, "dataType": "String", "stringListValues": [],
                                  "binaryListValues": []} for k, v in attributes.items()},
        "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": ARN, "awsRegion": "us-east-1"}]}


def test_no_json_body_makes_the_ingress_handler_raise(api: Api, aws: Any, container: Container) -> None:
    _, _, key = setup_producer(api, aws)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=BODIES, signed=st.booleans())
    def check(body: str, signed: bool) -> None:
        attrs = {"ymera-key-id": key["key_id"], "ymera-signature": producer_sign(body, key["secret"])} if signed \
            else {}
        result = handler(event(body, attrs), FakeContext())
        assert result == {"batchItemFailures": []}  # created, duplicate or rejected: never retried

    check()
