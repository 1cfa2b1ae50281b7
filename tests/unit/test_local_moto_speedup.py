"""infra.local.emulator.speed_up_sqs and cache_moto_dispatch: `make run`'s moto child answers SQS calls as stock
moto does, only cheaper.

Each case runs in its own interpreter (the patch replaces moto internals for the whole process, and the other
tests use stock moto in this one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json, sys, time
if sys.argv[1] == "fast":
    from infra.local.emulator import cache_moto_dispatch, speed_up_sqs
    speed_up_sqs()
    cache_moto_dispatch()
import boto3
from moto import mock_aws
out = {}
with mock_aws():
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=30)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=30)["Messages"]
    out["received"] = sorted(m["Body"] for m in got)
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    out["attributes"] = {n: attrs[n] for n in names}
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"], VisibilityTimeout=0)
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30).get("Messages", [])
    out["rest"] = sorted(m["Body"] for m in rest)
    out["empty"] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
import moto.sqs.models
out["patched"] = getattr(moto.sqs.models, "_ymera_fast_sqs", False)
print(json.dumps(out))
'''


def _run(mode: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_sped_up_sqs_answers_as_stock_moto_does() -> None:
    fast, stock = _run("fast"), _run("stock")
    assert (fast.pop("patched"), stock.pop("patched")) == (True, False)
    assert fast == stock
    # and the scenario exercised what the patch replaces: visibility, delay, in-flight counts
    assert stock["attributes"] == {"ApproximateNumberOfMessages": "3", "ApproximateNumberOfMessagesNotVisible": "2",
                                   "ApproximateNumberOfMessagesDelayed": "1"}
    assert len(stock["rest"]) == 4 and stock["empty"] == []  # type: ignore[arg-type]
