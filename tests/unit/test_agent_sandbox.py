"""chalicelib.agents.sandbox: a run past its budget is stopped and named, and outputs are capped."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.agents.sandbox import AgentCrashedError, cap_output, run_bounded
from chalicelib.errors import AgentInputError, MemoryLimitExceededError, WallClockExceededError

MiB = 1024 * 1024


class Job(BaseModel):
    action: str
    size: int = 0


class JobAgent(Agent):
    type = "job"
    Input = Job
    isolated: ClassVar[bool] = True

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, Job)
        if data.action == "backtrack":  # C-level work: no signal interrupts it, only the deadline's SIGKILL
            re.match(r"^(a+)+$", "a" * 40 + "!")
        if data.action == "spin":
            while True:
                pass
        if data.action == "allocate":
            blob = bytearray(data.size)
            return AgentOutput({"bytes": len(blob)})
        if data.action == "refuse":
            raise AgentInputError("not that", {"field": "action"})
        if data.action == "crash":
            raise KeyError("boom")
        return AgentOutput({"done": data.action, "ctx": ctx is None}, {"n": 1})


class InProcessAgent(JobAgent):
    isolated: ClassVar[bool] = False


def test_isolated_run_returns_the_childs_output() -> None:
    result = run_bounded(JobAgent(), Job(action="echo"), {}, None, 5, 64 * MiB)
    # The child never gets the task context: it must not touch the parent's database connections.
    assert result.output == {"done": "echo", "ctx": True} and result.metrics == {"n": 1}


def test_a_c_level_loop_is_killed_at_the_deadline() -> None:
    started = time.perf_counter()
    with pytest.raises(WallClockExceededError) as raised:
        run_bounded(JobAgent(), Job(action="backtrack"), {}, None, 0.5, 64 * MiB)
    assert time.perf_counter() - started < 2
    assert raised.value.code == "TIME_LIMIT_EXCEEDED" and raised.value.details == {"wall_seconds": 0.5}


def test_memory_over_budget_is_memory_limit_exceeded() -> None:
    with pytest.raises(MemoryLimitExceededError) as raised:
        run_bounded(JobAgent(), Job(action="allocate", size=512 * MiB), {}, None, 5, 64 * MiB)
    assert raised.value.code == "MEMORY_LIMIT_EXCEEDED"
    assert run_bounded(JobAgent(), Job(action="allocate", size=8 * MiB), {}, None, 5, 64 * MiB).output == {
        "bytes": 8 * MiB}


def test_an_agent_error_in_the_child_keeps_its_code_and_details() -> None:
    with pytest.raises(AgentInputError) as raised:
        run_bounded(JobAgent(), Job(action="refuse"), {}, None, 5, 64 * MiB)
    assert raised.value.message == "not that" and raised.value.details == {"field": "action"}


def test_a_crash_in_the_child_is_a_crash_the_processor_retries() -> None:
    with pytest.raises(AgentCrashedError, match="KeyError"):
        run_bounded(JobAgent(), Job(action="crash"), {}, None, 5, 64 * MiB)


def test_in_process_python_loop_is_stopped_by_the_alarm() -> None:
    started = time.perf_counter()
    with pytest.raises(WallClockExceededError):
        run_bounded(InProcessAgent(), Job(action="spin"), {}, None, 0.3, 64 * MiB)
    assert time.perf_counter() - started < 1.5
    # The alarm is cleared afterwards: a later slow-ish run is not interrupted.
    assert run_bounded(InProcessAgent(), Job(action="echo"), {}, None, 0.3, 64 * MiB).output["done"] == "echo"
    time.sleep(0.4)


def test_small_output_is_untouched() -> None:
    output = AgentOutput({"valid": True, "errors": []})
    assert cap_output(output, 1024) is output


def test_large_output_is_truncated_with_a_marker() -> None:
    output = AgentOutput({"valid": False, "error_count": 5000, "errors": [{"message": "x" * 100}] * 5000,
                          "blob": "y" * 50_000}, {"duration_ms": 1})
    capped = cap_output(output, 16 * 1024)
    body = capped.output
    assert len(json.dumps(body).encode()) <= 16 * 1024
    assert body["truncated"] is True and body["original_bytes"] > 500_000 and body["max_bytes"] == 16 * 1024
    assert body["valid"] is False and body["error_count"] == 5000
    assert 0 < body["omitted"]["errors"]["kept"] == len(body["errors"]) < 5000
    assert body["omitted"]["errors"]["total"] == 5000 and "blob" not in body and body["omitted"]["blob"]["bytes"]
    assert capped.metrics["output_truncated"] is True


def test_default_budgets_stay_below_the_consumer_timeouts() -> None:
    from chalicelib.config import Settings
    from infra.manifest import CONSUMER_TIMEOUT_SECONDS, PROVIDER_CONSUMER_TIMEOUT_SECONDS

    fields = Settings.model_fields
    for name, timeout in (("agent_wall_seconds", CONSUMER_TIMEOUT_SECONDS),
                          ("agent_provider_wall_seconds", PROVIDER_CONSUMER_TIMEOUT_SECONDS)):
        ceiling = next(m.le for m in fields[name].metadata if getattr(m, "le", None) is not None)
        assert fields[name].default < ceiling < timeout, name
