"""What the per-request session check costs when Redis has the answer, forgot the family, or is down.

The check (chalicelib.auth.guard.SessionGuard.check) runs on every authenticated request. Measured directly,
in-process, against the real Postgres (throwaway database) and Redis, one user with one live session:

- "up, cached": the middleware prefetched the lookup with the rate limiter (user state and family "live"
  cached): no I/O of the check's own. Also the check doing its own MGET (no rate limiter).
- "up, family key missing": Redis answers but has no family key (after a restart, a flush or an eviction;
  before issue 7 this read as "live"): one Postgres query plus one pipelined SET NX. Happens once per family
  per YMERA_SESSION_FAMILY_CACHE_TTL_SECONDS (60 s), shared by every container.
- "down": Redis unreachable or its breaker open: one Postgres query on every request (unchanged by issue 7).

Prints the median and p95 in microseconds per check. No budget: the figures go into docs/auth.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness  # noqa: E402 - needs the path above

CALLS = int(os.environ.get("BENCH_GUARD_CALLS", "2000"))


def main() -> int:
    with _harness.throwaway_database() as url:
        prefix = _harness.configure(url)
        from chalicelib.auth.guard import Lookup, UserState
        from chalicelib.auth.tokens import ACCESS
        from chalicelib.config import Settings
        from chalicelib.container import Container
        from chalicelib.db.models import User
        from chalicelib.services import refresh_tokens as store

        container = Container(Settings())
        guard = container.sessions
        with container.db.transaction() as session:
            user = User(username="bench", email="bench@example.com", password_hash="x", role="user")
            session.add(user)
            session.flush()
            family = uuid.uuid4()
            pair = store.mint_pair(container.tokens, user, family)
            store.record(session, pair, family)
        claims = container.tokens.verify(pair.access.token, ACCESS)
        state = UserState.of(user)
        guard.check(claims)  # warm: caches state and the family's "live"
        cached = Lookup(reachable=True, state=state, family_live=True)
        missing = Lookup(reachable=True, state=state, family_live=False)
        down = Lookup(reachable=False)

        cases = {
            "up, cached (prefetched)": lambda: guard.check(claims, cached),
            "up, cached (own MGET)": lambda: guard.check(claims),
            "up, family key missing": lambda: guard.check(claims, missing),
            "down (Postgres)": lambda: guard.check(claims, down),
        }
        print(f"{CALLS} checks each, interleaved, µs per check")
        for fn in cases.values():
            _harness.timings(fn, 50)  # warm the pool and the statement cache
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(CALLS):
            for name, fn in cases.items():
                samples[name] += _harness.timings(fn, 1)
        for name, values in samples.items():
            ordered = sorted(v * 1e6 for v in values)
            p95 = ordered[int(len(ordered) * .95)]
            print(f"  {name:<26} median {statistics.median(ordered):8.1f}   p95 {p95:8.1f}")
        _harness.drop_redis_keys(container.redis, prefix)
        container.db.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
