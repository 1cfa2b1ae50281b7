"""The per-user daily token budget on operator endpoints: counted in Postgres, enforced before the call.

Before: no budget existed; one user could spend the operator's tokens without limit across tasks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from chalicelib.container import Container, get_container, set_container
from chalicelib.db.models import ProviderUsage, User
from chalicelib.providers.usage import UsageLedger
from tests.integration.conftest import Api
from tests.integration.test_api_tasks import create_task
from tests.integration.test_consumer import message, run
from tests.llm_server import LLMServer, catalog, completion, openai_config


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def budgeted(monkeypatch: pytest.MonkeyPatch, server: LLMServer, db: Any) -> None:
    """A container whose catalog has the test server as "test" and a budget of 50 tokens a day."""
    monkeypatch.setenv("YMERA_LLM_KEY_TEST", "sk-operator")
    base = get_container()
    settings = base.settings.model_copy(update={"llm_endpoints": catalog(server), "llm_daily_token_budget_per_user": 50,
                                                "llm_max_attempts": 1})
    set_container(Container(settings, database=db, publisher=base.publisher))


def run_task(api: Api, config: dict[str, Any]) -> dict[str, Any]:
    r = api.call("POST", "/agents", {"name": "a", "type": "llm", "config": config})
    assert r.status_code == 201, r.json_body
    task_id = create_task(api, r.json_body["id"], input_data={"prompt": "hi"}).json_body["id"]
    assert run([(f"m-{task_id}", message(task_id, "llm"))], "llm") == {"batchItemFailures": []}
    return dict(api.call("GET", f"/tasks/{task_id}").json_body)


def test_the_budget_is_spent_across_tasks_then_refused_before_the_call(
        api: Api, other_api: Api, server: LLMServer, db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    budgeted(monkeypatch, server, db)
    api.signup()
    server.script(completion("one", prompt_tokens=40, completion_tokens=20))
    first = run_task(api, {"endpoint": "test"})
    assert first["status"] == "completed", first["error"]
    second = run_task(api, {"endpoint": "test"})
    assert second["status"] == "failed" and second["error"]["code"] == "BUDGET_EXCEEDED"
    assert second["error"]["details"]["limit"] == 50 and second["error"]["details"]["remaining"] == 0
    assert server.calls == 1  # refused before the call
    # another user has their own budget; the user's own endpoint is their cost, not metered
    other_api.signup()
    assert run_task(other_api, {"endpoint": "test"})["status"] == "completed"
    assert run_task(api, openai_config(server))["status"] == "completed"


def test_the_budget_check_is_one_indexed_query(db: Any) -> None:
    with db.transaction() as session:
        user = User(username=f"u{uuid.uuid4().hex[:6]}", email=f"{uuid.uuid4().hex[:6]}@example.com",
                    password_hash="x", role="user")
        session.add(user)
        session.flush()
        now = datetime.now(UTC)
        session.add_all([ProviderUsage(user_id=user.id, endpoint="test", tokens=10, created_at=now),
                         ProviderUsage(user_id=user.id, endpoint="test", tokens=5,
                                       created_at=now - timedelta(days=1, hours=1))])  # yesterday: not counted
        user_id = user.id
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert UsageLedger(db).spent_today(user_id) == 10
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    with db.engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(text(
            "EXPLAIN SELECT coalesce(sum(tokens), 0) FROM provider_usage WHERE user_id = :u AND created_at >= now()"),
            {"u": user_id}))
    assert "ix_provider_usage_user_id_created_at" in plan
