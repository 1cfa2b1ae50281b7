"""A task over its budget ends `failed` with TIME/MEMORY_LIMIT_EXCEEDED; its batch neighbours still complete."""

from __future__ import annotations

import re
from typing import Any

from chalicelib.agents.base import AgentOutput
from chalicelib.agents.validation import ValidationAgent
from tests.integration.conftest import Api
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run


class Pathological(ValidationAgent):
    """The validation agent, except for three payloads that misbehave the way a bad input used to."""

    def run(self, data: Any, config: Any, ctx: Any = None) -> Any:
        payload = data.root.payload
        if payload == "backtrack":
            re.match(r"^(a+)+$", "a" * 60 + "!")  # minutes of C-level backtracking
        if payload == "hog":
            return AgentOutput({"kept": len(bytearray(1 << 30))})
        if payload == "chatty":
            return AgentOutput({"valid": False, "errors": [{"message": "x" * 200}] * 10_000})
        return super().run(data, config, ctx)


def tight(container: Any) -> None:
    container.settings = container.settings.model_copy(update={
        "agent_wall_seconds": 1.0, "agent_memory_bytes": 128 << 20, "agent_output_max_bytes": 64 * 1024,
        "agent_isolate_min_bytes": 0})
    container.processor.agent_loader = lambda agent_type: Pathological()


def test_over_budget_tasks_fail_by_name_and_their_neighbour_completes(api: Api, container: Any) -> None:
    tight(container)
    api.signup()
    agent = api.agent()
    slow = create_task(api, agent["id"], input_data={"schema": {}, "payload": "backtrack"}).json_body
    hog = create_task(api, agent["id"], input_data={"schema": {}, "payload": "hog"}).json_body
    fine = create_task(api, agent["id"]).json_body
    records = [("m1", message(slow["id"])), ("m2", message(hog["id"])), ("m3", message(fine["id"]))]
    assert run(records) == {"batchItemFailures": []}
    got = {name: api.call("GET", f"/tasks/{t['id']}").json_body for name, t in
           (("slow", slow), ("hog", hog), ("fine", fine))}
    assert (got["slow"]["status"], got["slow"]["error"]["code"]) == ("failed", "TIME_LIMIT_EXCEEDED")
    assert (got["hog"]["status"], got["hog"]["error"]["code"]) == ("failed", "MEMORY_LIMIT_EXCEEDED")
    assert got["fine"]["status"] == "completed"


def test_an_output_over_the_cap_is_stored_truncated_with_a_marker(api: Api, container: Any) -> None:
    tight(container)
    api.signup()
    agent = api.agent()
    task = create_task(api, agent["id"], input_data={"schema": {}, "payload": "chatty"}).json_body
    assert run([("m1", message(task["id"]))]) == {"batchItemFailures": []}
    got = api.call("GET", f"/tasks/{task['id']}").json_body
    output = got["result"]["output_data"]
    assert got["status"] == "completed" and output["truncated"] is True and output["max_bytes"] == 64 * 1024
    assert output["original_bytes"] > 2_000_000 and output["omitted"]["errors"]["total"] == 10_000
