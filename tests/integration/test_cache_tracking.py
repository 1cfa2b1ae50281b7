"""Agent writes made anywhere through the ORM invalidate the agent cache once they commit: attribute
edits (the learning agent's quality), bulk updates by id (heartbeats), bulk updates by condition
(the watchdog), savepoints; nothing is bumped before the commit or for a rollback."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from chalicelib.config import Settings
from chalicelib.container import Container
from chalicelib.db.models import Agent
from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from tests.integration.conftest import Api
from tests.integration.test_cache_api import user_id_of


@pytest.fixture
def reader(settings: Settings, db: Database) -> Container:
    """Another process's container: reads only, through its own L1."""
    return Container(settings, database=db)


def warm(reader: Container, owner: uuid.UUID, *agent_ids: str) -> None:
    for agent_id in agent_ids:
        reader.agents.get(owner, uuid.UUID(agent_id))
        reader.agents.get(owner, uuid.UUID(agent_id))


def status(reader: Container, owner: uuid.UUID, agent_id: str) -> str:
    return reader.agents.get(owner, uuid.UUID(agent_id)).status


def test_an_orm_edit_outside_the_agent_service_is_seen_after_commit(
        api: Api, container: Container, reader: Container, db: Database) -> None:
    api.signup()
    agent = api.agent()
    owner = user_id_of(api, container)
    warm(reader, owner, agent["id"])
    with db.transaction() as session:  # e.g. the learning agent folding ratings into the posterior
        row = session.scalar(select(Agent).where(Agent.id == uuid.UUID(agent["id"])))
        assert row is not None
        row.quality_alpha = 9.0
        session.flush()
        hits = reader.cache.stats.l1_hits
        assert reader.agents.get(owner, row.id).quality.alpha == 1.0  # not committed: old value, still cached
        assert reader.cache.stats.l1_hits == hits + 1  # nothing was bumped before the commit
    assert reader.agents.get(owner, uuid.UUID(agent["id"])).quality.alpha == 9.0


def test_a_bulk_update_by_id_bumps_only_that_agent(api: Api, container: Container, reader: Container,
                                                   db: Database) -> None:
    api.signup()
    first, second = api.agent(name="one"), api.agent(name="two")
    owner = user_id_of(api, container)
    warm(reader, owner, first["id"], second["id"])
    with db.transaction() as session:  # like a heartbeat's UPDATE ... WHERE id = :id
        session.execute(update(Agent).where(Agent.id == uuid.UUID(first["id"])).values(status="offline"))
    misses = reader.cache.stats.misses
    assert status(reader, owner, first["id"]) == "offline"
    assert status(reader, owner, second["id"]) == "active"
    assert reader.cache.stats.misses == misses + 1  # the other agent stayed cached

    with db.transaction() as session:
        session.execute(update(Agent).where(Agent.id.in_([uuid.UUID(first["id"]), uuid.UUID(second["id"])]))
                        .values(status="inactive"))
    assert {status(reader, owner, a["id"]) for a in (first, second)} == {"inactive"}


def test_a_bulk_update_by_condition_bumps_the_namespace_only_when_rows_moved(
        api: Api, container: Container, reader: Container, db: Database) -> None:
    api.signup()
    agents = [api.agent(name=f"a{i}") for i in range(3)]
    owner = user_id_of(api, container)
    warm(reader, owner, *(a["id"] for a in agents))
    with db.transaction() as session:
        session.execute(update(Agent).where(Agent.user_id == owner, Agent.status == "offline")
                        .values(status="active"))  # matches nothing
    hits = reader.cache.stats.l1_hits
    assert [status(reader, owner, a["id"]) for a in agents] == ["active"] * 3
    assert reader.cache.stats.l1_hits == hits + 3

    with db.transaction() as session:
        session.execute(update(Agent).where(Agent.user_id == owner, Agent.name != "a0").values(status="offline"))
    assert [status(reader, owner, a["id"]) for a in agents] == ["active", "offline", "offline"]


def test_the_watchdog_marking_agents_offline_is_seen_at_once(api: Api, container: Container, reader: Container,
                                                              db: Database) -> None:
    from chalicelib.services.watchdog import mark_stale_agents

    api.signup()
    agent = api.agent()
    owner = user_id_of(api, container)
    with db.engine.begin() as conn:  # silent for an hour (raw SQL: not a tracked write)
        conn.execute(text("UPDATE agents SET last_heartbeat = :at WHERE id = :id"),
                     {"at": utcnow() - timedelta(hours=1), "id": uuid.UUID(agent["id"])})
    reader.cache.clear()
    warm(reader, owner, agent["id"])
    with db.transaction() as session:
        moved = mark_stale_agents(session, now=utcnow(), stale_seconds=60, user_id=owner)
    assert [m["agent_id"] for m in moved] == [agent["id"]]
    assert status(reader, owner, agent["id"]) == "offline"
    assert api.call("GET", f"/agents/{agent['id']}").json_body["status"] == "offline"


def test_a_rolled_back_write_changes_nothing_and_a_savepoint_keeps_the_outer_writes(
        api: Api, container: Container, reader: Container, db: Database) -> None:
    api.signup()
    first, second = api.agent(name="one"), api.agent(name="two")
    owner = user_id_of(api, container)
    warm(reader, owner, first["id"], second["id"])

    with pytest.raises(RuntimeError), db.transaction() as session:
        session.execute(update(Agent).where(Agent.id == uuid.UUID(first["id"])).values(name="never"))
        raise RuntimeError("abort")
    assert reader.agents.get(owner, uuid.UUID(first["id"])).name == "one"

    with db.transaction() as session:  # a consumer batch: one record's savepoint fails, another's commits
        session.execute(update(Agent).where(Agent.id == uuid.UUID(first["id"])).values(name="kept"))
        with pytest.raises(RuntimeError), session.begin_nested():
            session.execute(update(Agent).where(Agent.id == uuid.UUID(second["id"])).values(name="rolled-back"))
            raise RuntimeError("record failed")
    assert reader.agents.get(owner, uuid.UUID(first["id"])).name == "kept"
    assert reader.agents.get(owner, uuid.UUID(second["id"])).name == "two"
