"""The recommendation engine: which of the caller's agents, which agent types and which of their workflows fit
a task description, each score explained.

score = w_relevance x relevance + w_quality x quality, over candidates with at least one matched term:
- relevance: BM25 (chalicelib.engines.textrank) of the description against each candidate's text — an
  agent: its name, capabilities, `metadata.description` and its type's description and capabilities; a type:
  its description and capabilities; a workflow: its name and description — divided by the best candidate's
  BM25, so the best textual match has relevance 1;
- quality: the learned estimate (chalicelib.domain.quality's Beta posterior mean, maintained by the learning
  engine) — an agent's own; a type's best among the caller's active agents of it (0.5, "no estimate", when they
  have none); a workflow has none yet (0.5).
Owner-scoped: only the caller's agents and workflows are read; at most MAX_CANDIDATES of each.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from chalicelib.db.models import Agent
from chalicelib.db.workflow_models import Workflow
from chalicelib.engines import Engine, EngineContext
from chalicelib.engines.optimization import quality_estimate
from chalicelib.engines.textrank import MAX_TEXT_CHARS, bm25, query_terms

WEIGHTS = {"relevance": 0.7, "quality": 0.3}
NEUTRAL = 0.5
MAX_CANDIDATES = 500
KINDS = ("agent", "agent_type", "workflow")


def _type_docs() -> dict[str, dict[str, Any]]:
    from chalicelib.agents import registry

    docs = {}
    for agent_type in registry.available_types():
        impl = registry.get_agent(agent_type)
        docs[agent_type] = {"description": impl.description, "capabilities": list(impl.capabilities)}
    return docs


def _candidates(ctx: EngineContext, kinds: set[str]) -> list[dict[str, Any]]:
    types = _type_docs()
    out: list[dict[str, Any]] = []
    with ctx.transaction() as session:
        agents = session.execute(
            select(Agent.id, Agent.name, Agent.type, Agent.status, Agent.capabilities, Agent.meta,
                   Agent.quality_alpha, Agent.quality_beta)
            .where(Agent.user_id == ctx.user_id, Agent.deleted_at.is_(None))
            .order_by(Agent.created_at.desc(), Agent.id).limit(MAX_CANDIDATES)).all()
        workflows = session.execute(
            select(Workflow.id, Workflow.name, Workflow.description)
            .where(Workflow.user_id == ctx.user_id, Workflow.kind == "workflow", Workflow.deleted_at.is_(None))
            .order_by(Workflow.updated_at.desc(), Workflow.id).limit(MAX_CANDIDATES if "workflow" in kinds else 0)
        ).all()
    best: dict[str, tuple[float, float, str]] = {}  # type -> (mean, evidence, agent id) of the best active agent
    for a in agents:
        mean, evidence = quality_estimate(a.quality_alpha, a.quality_beta), a.quality_alpha + a.quality_beta - 2
        if a.status == "active" and mean > best.get(a.type, (-1.0, 0.0, ""))[0]:
            best[a.type] = (mean, evidence, str(a.id))
        if "agent" not in kinds:
            continue
        doc = types.get(a.type, {"description": "", "capabilities": []})
        extra = a.meta.get("description") if isinstance(a.meta, dict) else None
        text = " ".join([a.name, a.type, *map(str, a.capabilities or []),
                         extra if isinstance(extra, str) else "", doc["description"], *doc["capabilities"]])
        out.append({"kind": "agent", "id": str(a.id), "name": a.name, "agent_type": a.type, "status": a.status,
                    "text": text, "quality": {"value": round(mean, 6), "evidence": round(evidence, 6),
                                              "source": "the agent's learned estimate"}})
    if "agent_type" in kinds:
        for agent_type, doc in types.items():
            mean, evidence, agent_id = best.get(agent_type, (NEUTRAL, 0.0, ""))
            source = (f"your best active {agent_type} agent ({agent_id})" if agent_id
                      else "no estimate: you have no active agent of this type")
            out.append({"kind": "agent_type", "id": agent_type, "name": agent_type,
                        "text": " ".join([agent_type, doc["description"], *doc["capabilities"]]),
                        "quality": {"value": round(mean, 6), "evidence": round(evidence, 6), "source": source}})
    for w in workflows:
        out.append({"kind": "workflow", "id": str(w.id), "name": w.name, "text": f"{w.name} {w.description or ''}",
                    "quality": {"value": NEUTRAL, "evidence": 0.0, "source": "no estimate for workflows"}})
    return out


def recommend(ctx: EngineContext, description: str, *, limit: int, kinds: set[str],
              weights: dict[str, float]) -> dict[str, Any]:
    terms, truncated = query_terms(description)
    pool = _candidates(ctx, kinds) if terms else []
    matches = bm25(terms, [c.pop("text") for c in pool])
    top = max((m.score for m in matches), default=0.0)
    results = []
    for candidate, match in zip(pool, matches, strict=True):
        if match.score <= 0:
            continue  # quality alone never recommends something unrelated
        relevance = match.score / top
        quality = candidate["quality"]["value"]
        score = weights["relevance"] * relevance + weights["quality"] * quality
        terms_hit = [str(t["term"]) for t in match.terms]
        results.append({**candidate, "score": round(score, 6), "relevance": round(relevance, 6),
                        "bm25": round(match.score, 4), "matched_terms": match.terms,
                        "why": (f"{weights['relevance']} x relevance {relevance:.3f} (matched {', '.join(terms_hit)}) "
                                f"+ {weights['quality']} x quality {quality:.3f} = {score:.3f}")})
    results.sort(key=lambda r: (-r["score"], KINDS.index(r["kind"]), r["name"], r["id"]))
    return {"query_terms": terms, "truncated": truncated, "weights": weights, "candidates": len(pool),
            "results": results[:limit]}


class RecommendationEngine(Engine):
    name = "recommendation"
    description = ("Given a task description, ranks your agents, the platform's agent types and your workflows "
                   "that fit: BM25 text relevance over their descriptions and capabilities, combined with the "
                   "learned quality estimate, each score explained (matched terms, relevance, quality, weights).")
    input_schema = {
        "type": "object", "additionalProperties": False, "required": ["description"],
        "properties": {
            "description": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
            "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
            "kinds": {"type": "array", "items": {"enum": list(KINDS)}, "minItems": 1, "uniqueItems": True},
            "weights": {"type": "object", "additionalProperties": False, "required": ["relevance", "quality"],
                        "properties": {"relevance": {"type": "number", "minimum": 0, "maximum": 1},
                                       "quality": {"type": "number", "minimum": 0, "maximum": 1}}},
        },
    }
    output_schema = {
        "type": "object", "required": ["query_terms", "weights", "results"],
        "properties": {
            "query_terms": {"type": "array", "items": {"type": "string"}}, "truncated": {"type": "boolean"},
            "weights": {"type": "object"}, "candidates": {"type": "integer"},
            "results": {"type": "array", "items": {
                "type": "object", "required": ["kind", "id", "name", "score", "relevance", "quality", "matched_terms"],
                "properties": {"kind": {"enum": list(KINDS)}, "score": {"type": "number"}}}},
        },
    }
    example = {"description": "Scan this repository for hard-coded AWS keys and passwords", "limit": 5}

    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002 - the contract's name
        return recommend(ctx, input["description"], limit=int(input.get("limit", 10)),
                         kinds=set(input.get("kinds") or KINDS), weights=dict(input.get("weights") or WEIGHTS))
