"""The intelligence engine's report: the caller's model calls over a range, by endpoint and model, in one
grouped statement over provider_usage's (user_id, created_at) index, plus today's budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, null, select

from chalicelib.db.models import ProviderUsage
from chalicelib.engines import EngineContext
from chalicelib.engines.registry import EngineInputInvalidError
from chalicelib.providers.usage import day_start, spent_on

MAX_RANGE = timedelta(days=366)


def _instant(value: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EngineInputInvalidError(f"{field} is not an ISO 8601 date-time", {"field": field}) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window(input: dict[str, Any], now: datetime) -> tuple[datetime, datetime]:  # noqa: A002 - the engine's input
    end = _instant(input["to"], "to") if "to" in input else now
    start = _instant(input["from"], "from") if "from" in input else end - timedelta(days=int(input.get("days", 7)))
    if not start < end or end - start > MAX_RANGE:
        raise EngineInputInvalidError("the range must start before it ends and span at most 366 days",
                                      {"from": start.isoformat(), "to": end.isoformat()})
    return start, end


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def report(ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002 - the engine's input
    from chalicelib.db.types import utcnow

    now = utcnow()
    start, end = window(input, now)
    served = ProviderUsage.cached.is_(False)
    latency = ProviderUsage.latency_ms
    with ctx.transaction() as session:
        if session.get_bind().dialect.name == "postgresql":
            p50: ColumnElement[Any] = func.percentile_cont(0.5).within_group(latency).filter(served)
            p90: ColumnElement[Any] = func.percentile_cont(0.9).within_group(latency).filter(served)
        else:  # SQLite (the local runtime) has no percentile_cont: mean and max only
            p50 = p90 = null()
        rows = session.execute(
            select(ProviderUsage.endpoint, ProviderUsage.model, func.count(),
                   func.count().filter(ProviderUsage.cached.is_(True)),
                   func.coalesce(func.sum(ProviderUsage.input_tokens).filter(served), 0),
                   func.coalesce(func.sum(ProviderUsage.output_tokens).filter(served), 0),
                   func.coalesce(func.sum(ProviderUsage.total_tokens).filter(served), 0),
                   func.coalesce(func.sum(ProviderUsage.tokens), 0),
                   func.coalesce(func.sum(ProviderUsage.total_tokens).filter(ProviderUsage.cached.is_(True)), 0),
                   func.coalesce(func.sum(ProviderUsage.attempts).filter(served), 0),
                   func.avg(latency).filter(served),
                   p50, p90,
                   func.max(latency).filter(served))
            .where(ProviderUsage.user_id == ctx.user_id, ProviderUsage.created_at >= start,
                   ProviderUsage.created_at < end)
            .group_by(ProviderUsage.endpoint, ProviderUsage.model)
            .order_by(ProviderUsage.endpoint, ProviderUsage.model)
        ).all()
        spent = spent_on(session, ctx.user_id, now)
    groups = []
    for r in rows:
        calls, hits = int(r[2]), int(r[3])
        groups.append({
            "endpoint": r[0], "model": r[1], "calls": calls, "provider_calls": calls - hits, "cache_hits": hits,
            "cache_hit_rate": _rate(hits, calls), "input_tokens": int(r[4]), "output_tokens": int(r[5]),
            "total_tokens": int(r[6]), "charged_tokens": int(r[7]), "tokens_saved_by_cache": int(r[8]),
            "attempts": int(r[9]),
            "latency_ms": {"mean": _round(r[10]), "p50": _round(r[11]), "p90": _round(r[12]), "max": _round(r[13])},
        })
    keys = ("calls", "provider_calls", "cache_hits", "input_tokens", "output_tokens", "total_tokens",
            "charged_tokens", "tokens_saved_by_cache", "attempts")
    totals: dict[str, Any] = {k: sum(g[k] for g in groups) for k in keys}
    totals["cache_hit_rate"] = _rate(totals["cache_hits"], totals["calls"])
    limit = ctx.settings.llm_daily_token_budget_per_user
    budget = {"daily_limit": limit or None, "spent_today": spent,
              "remaining_today": max(0, limit - spent) if limit else None,
              "resets_at": (day_start(now) + timedelta(days=1)).isoformat()}
    return {"scope": "yours", "range": {"from": start.isoformat(), "to": end.isoformat()}, "totals": totals,
            "by_endpoint_model": groups, "budget": budget}


def _round(value: Any) -> float | None:
    return round(float(value), 3) if value is not None else None
