"""The recommendation engine: ranks the caller's agents, agent types and workflows for a task description,
each score explained; owner-scoped."""

from __future__ import annotations

import uuid
from typing import Any

from chalicelib.db.session import Database
from chalicelib.db.types import utcnow
from chalicelib.db.workflow_models import Workflow
from chalicelib.engines.textrank import MAX_QUERY_TERMS, query_terms
from tests.integration import engine_seed as es


def workflow(db: Database, user_id: uuid.UUID, name: str, description: str, **values: Any) -> uuid.UUID:
    with db.transaction() as session:
        row = Workflow(user_id=user_id, name=name, description=description, **values)
        session.add(row)
        session.flush()
        return row.id


def test_the_example_runs_on_a_real_database(db: Database, settings: Any) -> None:
    uid = es.user(db)
    out = es.run("recommendation", es.ctx(db, settings, uid))
    assert out["results"][0]["kind"] == "agent_type" and out["results"][0]["id"] == "security"


def test_a_clearly_matching_agent_ranks_first_and_is_explained(db: Database, settings: Any) -> None:
    uid, other = es.user(db), es.user(db)
    scanner = es.agent(db, uid, "security", "leak-hunter", capabilities=["credentials", "leaked-passwords"],
                       meta={"description": "scans repositories for leaked credentials"},
                       quality_alpha=4.0, quality_beta=1.0)
    es.agent(db, uid, "drafting", "writer", capabilities=["blog-posts"])
    es.agent(db, other, "security", "their-scanner", capabilities=["credentials", "leaked-passwords"],
             quality_alpha=50.0, quality_beta=1.0)
    flow = workflow(db, uid, "release-check", "scan credentials before every release")
    workflow(db, uid, "old-scan", "scan leaked credentials", deleted_at=utcnow())
    workflow(db, uid, "a-plan", "scan leaked credentials", kind="plan")
    workflow(db, other, "their-flow", "scan leaked credentials")

    out = es.run("recommendation", es.ctx(db, settings, uid),
                 {"description": "Scan the repository for leaked credentials and passwords", "limit": 10})
    first = out["results"][0]
    assert first["kind"] == "agent" and first["id"] == str(scanner) and first["name"] == "leak-hunter"
    assert first["relevance"] == 1.0 and first["quality"]["value"] == 0.8
    assert first["score"] == round(0.7 * 1.0 + 0.3 * 0.8, 6)
    assert {"credential", "leak", "password", "repository"} <= {t["term"] for t in first["matched_terms"]}
    assert all(t["contribution"] > 0 and t["idf"] > 0 for t in first["matched_terms"])
    assert "0.7 x relevance 1.000" in first["why"] and "0.3 x quality 0.800" in first["why"]
    assert out["weights"] == {"relevance": 0.7, "quality": 0.3}

    names = [(r["kind"], r["name"]) for r in out["results"]]
    assert ("agent_type", "security") in names and ("workflow", "release-check") in names
    assert str(flow) in {r["id"] for r in out["results"]}
    # never another user's agents or workflows, deleted workflows or plans; unrelated agents are not listed
    assert not {"their-scanner", "their-flow", "old-scan", "a-plan", "writer"} & {n for _, n in names}
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    # the type's quality is the caller's best active agent of it
    [sec] = [r for r in out["results"] if r["kind"] == "agent_type" and r["name"] == "security"]
    assert sec["quality"]["value"] == 0.8 and str(scanner) in sec["quality"]["source"]


def test_quality_breaks_a_tie_in_relevance(db: Database, settings: Any) -> None:
    uid = es.user(db)
    es.agent(db, uid, "validation", "check-a", capabilities=["invoices"], quality_alpha=1.0, quality_beta=3.0)
    good = es.agent(db, uid, "validation", "check-b", capabilities=["invoices"], quality_alpha=3.0, quality_beta=1.0)
    out = es.run("recommendation", es.ctx(db, settings, uid), {"description": "validate invoices", "kinds": ["agent"]})
    assert [r["id"] for r in out["results"]][0] == str(good)
    assert out["results"][0]["relevance"] == out["results"][1]["relevance"] == 1.0
    # weights are the caller's to choose: relevance only ties them, and the name decides
    flat = es.run("recommendation", es.ctx(db, settings, uid),
                  {"description": "validate invoices", "kinds": ["agent"], "weights": {"relevance": 1, "quality": 0}})
    assert [r["name"] for r in flat["results"]] == ["check-a", "check-b"]


def test_the_query_is_bounded_and_nothing_matches_nothing(db: Database, settings: Any) -> None:
    uid = es.user(db)
    terms, truncated = query_terms(" ".join(f"word{i}" for i in range(500)))
    assert len(terms) == MAX_QUERY_TERMS and truncated
    out = es.run("recommendation", es.ctx(db, settings, uid), {"description": "zzzz qqqq"})
    assert out["results"] == []
