"""`POST /auth/login` against one `bcrypt.checkpw` at the configured cost, and where bcrypt runs at all.

Login is bcrypt-bound by design: its median should be one checkpw plus a little (query, audit row,
two JWTs, refresh-token row). Budget (issue #3): login median <= 1.2x one checkpw, same run,
interleaved. Then a counting shim around bcrypt.hashpw/checkpw shows which requests pay for bcrypt:
only register, login and password change may; authenticated requests, refresh and logout must not.

In-process through the Chalice app (`app(event, context)`), throwaway Postgres database, test Redis,
moto for SQS. The cost is YMERA_BCRYPT_ROUNDS (default 12). BENCH_LOGINS (default 15) logins.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import _harness  # noqa: E402 - needs the path above
from _harness import call, event  # noqa: E402

LOGINS = int(os.environ.get("BENCH_LOGINS", "15"))
BUDGET = 1.2
PASSWORD = "bench password"
CALLS: Counter[str] = Counter()
ORIGINAL = {"hashpw": bcrypt.hashpw, "checkpw": bcrypt.checkpw}


def _counting(name: str) -> Callable[..., Any]:
    original = ORIGINAL[name]

    def shim(*args: Any, **kwargs: Any) -> Any:
        CALLS[name] += 1
        return original(*args, **kwargs)

    return shim


def main() -> int:
    # chalicelib.auth.passwords calls bcrypt.<fn> at call time, so the shims see every use.
    bcrypt.hashpw, bcrypt.checkpw = _counting("hashpw"), _counting("checkpw")  # type: ignore[method-assign]
    from moto import mock_aws

    with _harness.throwaway_database() as url:
        prefix = _harness.configure(url)
        with mock_aws():
            return run(prefix)


def run(prefix: str) -> int:
    from chalicelib.config import Settings
    from chalicelib.container import Container, set_container

    container = Container(Settings())
    set_container(container)
    from app import app

    rounds = container.settings.bcrypt_rounds
    try:
        with _harness.quiet_stdout():
            token, task_id = _harness.seed_completed_task(app, "bench", PASSWORD)
            login = event("POST", "/auth/login", body={"username": "bench", "password": PASSWORD})
            call(app, login)  # warm, including the unknown-user dummy hash (made once per process)
            call(app, event("POST", "/auth/login", body={"username": "nobody", "password": PASSWORD}), 401)
            stored = ORIGINAL["hashpw"](PASSWORD.encode(), bcrypt.gensalt(rounds))
            logins, checks = [], []
            for _ in range(LOGINS):  # interleaved: one login, one bare checkpw
                logins.append(_seconds(lambda: call(app, login)))
                checks.append(_seconds(lambda: ORIGINAL["checkpw"](PASSWORD.encode(), stored)))
            usage = bcrypt_usage(app, token, task_id)
    finally:
        container.db.engine.dispose()
        _harness.drop_redis_keys(container.redis, prefix)
    return report(rounds, logins, checks, usage)


def bcrypt_usage(app: Any, token: str, task_id: str) -> list[tuple[str, dict[str, int], bool]]:
    """(request, bcrypt calls it made, whether bcrypt is allowed there) for each kind of request."""
    import jwt

    pair = call(app, event("POST", "/auth/login", body={"username": "bench", "password": PASSWORD}))
    token = pair["access_token"]
    me = jwt.decode(token, options={"verify_signature": False})["sub"]  # our own id, to change our password
    steps: list[tuple[str, bool, Callable[[], Any]]] = [
        ("POST /auth/register", True, lambda: call(app, event("POST", "/auth/register", body={
            "username": "other", "email": "other@example.com", "password": PASSWORD}), 201)),
        ("POST /auth/login", True, lambda: call(app, event("POST", "/auth/login", body={
            "username": "bench", "password": PASSWORD}))),
        ("POST /auth/login (wrong password)", True, lambda: call(app, event("POST", "/auth/login", body={
            "username": "bench", "password": "wrong password"}), 401)),
        ("POST /auth/login (unknown user)", True, lambda: call(app, event("POST", "/auth/login", body={
            "username": "nobody", "password": PASSWORD}), 401)),
        ("GET /tasks/{id}", False, lambda: call(app, event("GET", "/tasks/{task_id}", f"/tasks/{task_id}",
                                                          token=token, path_params={"task_id": task_id}))),
        ("GET /agents", False, lambda: call(app, event("GET", "/agents", token=token))),
        ("POST /auth/refresh", False, lambda: call(app, event("POST", "/auth/refresh", body={
            "refresh_token": pair["refresh_token"]}))),
        ("PUT /users/{id}/password", True, lambda: call(app, event(
            "PUT", "/users/{user_id}/password", f"/users/{me}/password", token=token,
            path_params={"user_id": me}, body={"current_password": PASSWORD, "new_password": PASSWORD + "!"}))),
    ]
    usage = []
    for name, allowed, step in steps:
        CALLS.clear()
        step()
        usage.append((name, dict(CALLS), allowed))
    return usage


def _seconds(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def report(rounds: int, logins: list[float], checks: list[float],
           usage: list[tuple[str, dict[str, int], bool]]) -> int:
    ratio = statistics.median(logins) / statistics.median(checks)
    print(f"POST /auth/login vs bcrypt.checkpw at cost {rounds}, {len(logins)} of each, interleaved")
    print(f"  login    {_harness.summary(logins)}")
    print(f"  checkpw  {_harness.summary(checks)}")
    ok_ratio = ratio <= BUDGET
    print(f"  login / checkpw = {ratio:.3f}x  (budget <= {BUDGET}x)  {'ok' if ok_ratio else 'OVER BUDGET'}")
    print("  bcrypt calls per request (counting shim around bcrypt.hashpw / checkpw):")
    ok_usage = True
    for name, calls, allowed in usage:
        total = sum(calls.values())
        good = total > 0 if allowed else total == 0
        ok_usage &= good
        shown = ", ".join(f"{k} x{v}" for k, v in sorted(calls.items())) or "none"
        print(f"    {name:<36} {shown:<24} {'expected' if good else 'UNEXPECTED'}")
    print(f"  bcrypt only on register, login and password change: {'yes' if ok_usage else 'NO'}")
    return 0 if ok_ratio and ok_usage else 1


if __name__ == "__main__":
    sys.exit(main())
