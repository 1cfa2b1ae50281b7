"""Same-run A/B of the access-log line (not a benchmark: run_all skips `_` files).

The cached `GET /tasks/{id}` of bench/cached_get_task.py through the app, every other call with the stock
Powertools path restored (its formatter class and json.dumps serializer, `logger.info` for the line: "before")
and with the app's (`chalicelib.observability.access_log` and `_Formatter`: "after"), interleaved call by call
with the bare Chalice route and one PING, the two app sides alternating which goes first.
`N` (default 3000) calls per side. Prints medians and the ratios to (bare + PING).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness  # noqa: E402 - needs the path above
from _harness import LambdaContext, event  # noqa: E402


def main() -> None:
    from moto import mock_aws
    with _harness.throwaway_database() as url:
        prefix = _harness.configure(url, YMERA_BCRYPT_ROUNDS="4")
        with mock_aws():
            run(prefix)


def run(prefix: str) -> None:
    import redis
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
    from chalice import Chalice

    import chalicelib.api.middleware as mw
    from chalicelib import observability as ob
    from chalicelib.config import Settings
    from chalicelib.container import Container, set_container

    container = Container(Settings(), redis_client=redis.Redis.from_url(_harness.REDIS_URL, socket_connect_timeout=1.0,
                                                                        socket_timeout=1.0))
    set_container(container)
    from app import app
    ctx = LambdaContext()
    f = ob.logger.registered_formatter
    ours = (type(f), f.json_serializer, ob.access_log)
    stock = (LambdaPowertoolsFormatter, partial(json.dumps, default=f.json_default, separators=(",", ":"),
                                                indent=f.json_indent, ensure_ascii=False),
             lambda message, fields: ob.logger.info(message, extra=fields))

    def use(side: Any) -> None:
        f.__class__, f.json_serializer, mw.access_log = side

    try:
        with _harness.quiet_stdout():
            token, task_id = _harness.seed_completed_task(app)
        bare = Chalice(app_name="bare")
        bare.route("/const", methods=["GET"])(lambda: {"ok": True})
        get = event("GET", "/tasks/{task_id}", f"/tasks/{task_id}", token=token, path_params={"task_id": task_id})
        const = event("GET", "/const", token=token)
        ping = container.redis.ping
        hs: dict[str, tuple[Any, dict[str, Any], Any]] = {
            "after": (app, get, ours), "before": (app, get, stock), "bare": (bare, const, None),
            "ping": (lambda e, c: ping(), const, None)}
        N = int(os.environ.get("N", "3000"))
        with _harness.quiet_stdout():
            for h, e, side in hs.values():
                if side:
                    use(side)
                for _ in range(300):
                    h(e, ctx)
            s: dict[str, list[float]] = {k: [] for k in hs}
            pc = time.perf_counter
            items = list(hs.items())
            flipped = [items[1], items[0], *items[2:]]
            for i in range(N):
                for k, (h, e, side) in (items if i % 2 else flipped):
                    if side:
                        use(side)
                    t = pc()
                    h(e, ctx)
                    s[k].append(pc() - t)
        use(ours)
        med = {k: statistics.median(v) * 1e6 for k, v in s.items()}
        floor = med["bare"] + med["ping"]
        print(f"N={N} medians us: " + ", ".join(f"{k} {v:.0f}" for k, v in med.items()))
        print(f"before / (bare + PING) = {med['before'] / floor:.2f}x   after / (bare + PING) = "
              f"{med['after'] / floor:.2f}x   after / before = {med['after'] / med['before']:.2f}")
    finally:
        container.db.engine.dispose()
        _harness.drop_redis_keys(container.redis, prefix)


if __name__ == "__main__":
    main()
