"""The intelligence gateway: every provider-backed agent's model call is accounted, opt-in identical prompts
are answered from a per-user cache (counted, never charged, never another user's), and the engine reports it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from chalicelib.container import Container, get_container, set_container
from chalicelib.db.models import Agent, ProviderUsage
from tests.integration import engine_seed as es
from tests.integration.conftest import Api
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run
from tests.llm_server import LLMServer, catalog, completion


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


@pytest.fixture
def gateway_container(monkeypatch: pytest.MonkeyPatch, server: LLMServer, db: Any, api: Api) -> Container:
    """The test server as operator endpoint "test", with a daily budget of 1,000 tokens."""
    monkeypatch.setenv("YMERA_LLM_KEY_TEST", "sk-operator")
    base = get_container()
    settings = base.settings.model_copy(update={"llm_endpoints": catalog(server), "llm_max_attempts": 1,
                                                "llm_daily_token_budget_per_user": 1000})
    c = Container(settings, database=db, publisher=base.publisher)
    set_container(c)
    return c


def llm_agent(api: Api, **config: Any) -> str:
    r = api.call("POST", "/agents", {"name": "gpt", "type": "llm", "config": {"endpoint": "test", **config}})
    assert r.status_code == 201, r.json_body
    return str(r.json_body["id"])


def ask(api: Api, agent_id: str, prompt: str = "What is the capital of France?") -> dict[str, Any]:
    task_id = create_task(api, agent_id, input_data={"prompt": prompt}).json_body["id"]
    assert run([(f"m-{task_id}", message(task_id, "llm"))], "llm") == {"batchItemFailures": []}
    task = dict(api.call("GET", f"/tasks/{task_id}").json_body)
    assert task["status"] == "completed", task["error"]
    return task


def owner(db: Any, agent_id: str) -> uuid.UUID:
    with db.read() as session:
        return session.scalar(select(Agent.user_id).where(Agent.id == uuid.UUID(agent_id)))  # type: ignore[no-any-return]


def test_an_identical_prompt_is_answered_once_then_from_the_cache_and_counted(
        api: Api, other_api: Api, server: LLMServer, gateway_container: Container, db: Any) -> None:
    api.signup()
    agent_id = llm_agent(api, cache_ttl_seconds=600)
    server.script(completion("Paris.", prompt_tokens=40, completion_tokens=20))
    first = ask(api, agent_id)
    second = ask(api, agent_id)
    assert server.calls == 1  # the second task never reached the provider
    assert first["result"]["output_data"]["text"] == second["result"]["output_data"]["text"] == "Paris."
    metrics = second["result"]["metrics"]
    assert metrics["provider_cache_hits"] == 1 and metrics["total_tokens"] == 0  # nothing spent
    assert "provider_cache_hits" not in first["result"]["metrics"]
    with db.read() as session:
        rows = session.scalars(select(ProviderUsage).order_by(ProviderUsage.created_at)).all()
        assert [(r.cached, r.tokens, r.total_tokens, r.model, r.endpoint) for r in rows] == [
            (False, 60, 60, "test-model", "test"), (True, 0, 60, "test-model", "test")]

    # a different prompt is a different key
    ask(api, agent_id, "And of Spain?")
    assert server.calls == 2

    # user B, same agent config, same prompt: their own call, never A's answer
    other_api.signup()
    server.script(completion("Paris (for B).", prompt_tokens=40, completion_tokens=25))
    theirs = ask(other_api, llm_agent(other_api, cache_ttl_seconds=600))
    assert server.calls == 3 and theirs["result"]["output_data"]["text"] == "Paris (for B)."
    assert "provider_cache_hits" not in theirs["result"]["metrics"]

    # the engine reports each user's own usage and hit rate
    a_out = es.run("intelligence", es.ctx(db, gateway_container.settings, owner(db, agent_id)))
    assert a_out["totals"]["calls"] == 3 and a_out["totals"]["cache_hits"] == 1
    assert a_out["totals"]["cache_hit_rate"] == round(1 / 3, 6)
    [group] = a_out["by_endpoint_model"]
    assert (group["endpoint"], group["model"], group["provider_calls"]) == ("test", "test-model", 2)
    assert group["charged_tokens"] == 120 and group["tokens_saved_by_cache"] == 60
    assert group["latency_ms"]["mean"] is not None and group["latency_ms"]["p50"] <= group["latency_ms"]["max"]
    assert a_out["budget"] == {**a_out["budget"], "daily_limit": 1000, "spent_today": 120, "remaining_today": 880}
    b_user = owner(db, theirs["agent_id"])
    b_out = es.run("intelligence", es.ctx(db, gateway_container.settings, b_user), {"days": 1})
    assert b_out["totals"]["calls"] == 1 and b_out["totals"]["cache_hits"] == 0
    assert b_out["budget"]["spent_today"] == 65


def test_without_the_opt_in_every_prompt_reaches_the_provider(
        api: Api, server: LLMServer, gateway_container: Container, db: Any) -> None:
    api.signup()
    agent_id = llm_agent(api)
    ask(api, agent_id)
    ask(api, agent_id)
    assert server.calls == 2
    with db.read() as session:
        assert [r.cached for r in session.scalars(select(ProviderUsage))] == [False, False]


def test_the_example_answers_with_no_usage(db: Any, settings: Any) -> None:
    out = es.run("intelligence", es.ctx(db, settings, es.user(db)))
    assert out["totals"]["calls"] == 0 and out["by_endpoint_model"] == [] and out["totals"]["cache_hit_rate"] == 0.0


def test_a_bad_range_is_an_input_error(db: Any, settings: Any) -> None:
    from chalicelib.engines.registry import EngineInputInvalidError

    with pytest.raises(EngineInputInvalidError):
        es.run("intelligence", es.ctx(db, settings, es.user(db)),
               {"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"})
    with pytest.raises(EngineInputInvalidError):
        es.run("intelligence", es.ctx(db, settings, es.user(db)), {"from": "yesterday"})
