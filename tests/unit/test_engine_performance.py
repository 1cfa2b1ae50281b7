"""The performance engine's arithmetic, and its 'current values' staying those infra/manifest.py deploys."""

from __future__ import annotations

import pytest

from chalicelib.config import Settings
from chalicelib.engines.performance import Deployed, deployed, recommend
from infra import manifest


@pytest.mark.parametrize("agent_type", manifest.AGENT_CONSUMERS)
def test_current_values_are_what_the_manifest_deploys(agent_type: str) -> None:
    fast, bulk = (next(f for f in manifest.functions() if f.name == name)
                  for name in (f"agent-{agent_type}", f"agent-{agent_type}-bulk"))
    now = deployed(agent_type, Settings(_env_file=None))  # type: ignore[call-arg]
    # the lanes run the same function settings; the type's concurrency is both lanes' together
    assert (fast.timeout, fast.memory, fast.batch_size) == (bulk.timeout, bulk.memory, bulk.batch_size)
    assert (now.timeout, now.memory, now.batch_size, now.max_concurrency) == (
        fast.timeout, fast.memory, fast.batch_size, fast.max_concurrency + bulk.max_concurrency)


def test_recommendations_show_their_arithmetic() -> None:
    now = Deployed(timeout=60, memory=512, batch_size=10, max_concurrency=5, provider_backed=False)
    recs = recommend({"p50": 20.0, "p95": 35.0, "p99": 41.0, "mean": 22.0}, 120, now)
    assert recs["timeout_seconds"] == {"current": 60, "recommended": 62, "reason":
                                       "p99 duration 41 s × 1.5 headroom = 61.5 s → 62 s (bounded to 10..900 s)"}
    assert recs["memory_mb"]["recommended"] == 1024  # p95 35 s is 58% of the 60 s timeout
    assert "58%" in recs["memory_mb"]["reason"]
    assert recs["batch_size"]["recommended"] == 1  # 62 / (35 × 1.5) = 1.18
    # 120/min = 2/s × 22 s = 44 busy × 1.5 = 66
    assert recs["max_concurrency"]["recommended"] == 66
    assert "2.00/s × mean duration 22 s = 44.00 busy instances" in recs["max_concurrency"]["reason"]


def test_fast_work_keeps_memory_and_batches_fully() -> None:
    now = Deployed(timeout=60, memory=512, batch_size=10, max_concurrency=5, provider_backed=False)
    recs = recommend({"p50": 0.1, "p95": 0.4, "p99": 0.9, "mean": 0.2}, 30, now)
    assert recs["timeout_seconds"]["recommended"] == 10  # the floor
    assert recs["memory_mb"]["recommended"] == 512
    assert recs["batch_size"]["recommended"] == 10
    assert recs["max_concurrency"]["recommended"] == 2  # Lambda's minimum for SQS


def test_nothing_measured_keeps_every_current_value() -> None:
    now = Deployed(timeout=300, memory=512, batch_size=1, max_concurrency=3, provider_backed=True)
    recs = recommend({"p50": None, "p95": None, "p99": None, "mean": None}, 0, now)
    assert {k: v["recommended"] for k, v in recs.items()} == {"timeout_seconds": 300, "memory_mb": 512,
                                                             "batch_size": 1, "max_concurrency": 3}
