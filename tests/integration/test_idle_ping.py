"""IdlePing (chalicelib.db.session): only a connection that sat idle is pinged, and a dead one is replaced."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from chalicelib.db.session import IdlePing, make_engine


class Clock:
    def __init__(self) -> None:
        # Far from time.monotonic(): the engine's own IdlePing (make_engine's) must never read this clock's marks.
        self.now = -1e6

    def __call__(self) -> float:
        return self.now


def _engine_with_clock(pg_url: str, idle_seconds: float) -> tuple[Any, IdlePing, Clock]:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_idle_seconds=10_000)  # its own ping: never
    clock = Clock()
    ping = IdlePing(engine, idle_seconds, clock=clock)
    ping.install()
    return engine, ping, clock


def _backend_pid(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_used_moments_ago_is_not_pinged_and_an_idle_one_is(pg_url: str) -> None:
    engine, ping, clock = _engine_with_clock(pg_url, idle_seconds=1.0)
    try:
        _backend_pid(engine)  # a new connection: never pinged
        clock.now += 0.5
        _backend_pid(engine)
        assert ping.pings == 0
        clock.now += 1.5
        _backend_pid(engine)
        assert ping.pings == 1
    finally:
        engine.dispose()


def test_an_idle_connection_that_died_is_replaced_before_use(pg_url: str) -> None:
    # GIVEN a pooled connection whose server process was terminated while it sat in the pool
    engine, ping, clock = _engine_with_clock(pg_url, idle_seconds=1.0)
    other = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        dead = _backend_pid(engine)
        with other.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dead}).scalar_one() is True
            conn.commit()
        clock.now += 2
        # WHEN it is checked out again THEN the ping finds it dead and the pool hands out a new one
        assert _backend_pid(engine) != dead
        assert ping.pings == 1
    finally:
        engine.dispose()
        other.dispose()
