"""Sessions under concurrency, retries and the loss of Redis (issue 7 §5), on the real Postgres and Redis.

The races are made deterministic without patching our code: the refresh (or logout) under test runs on a
Database whose transactions wait, with their work done but not yet committed, until the test lets them go.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from chalicelib.auth.tokens import ACCESS
from chalicelib.container import Container
from chalicelib.db.models import AuditLog, RefreshToken
from chalicelib.db.session import Database
from chalicelib.errors import AuthenticationError
from chalicelib.services.meta import RequestMeta
from chalicelib.services.users import UserService
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_auth_tokens import assert_dead, backdate_use, events, refresh


class HeldDatabase(Database):
    """Every transaction does its work, then waits (uncommitted, locks held) until `release` is set."""

    def __init__(self, db: Database) -> None:
        super().__init__(db.engine)
        self.holding = threading.Event()
        self.release = threading.Event()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with super().transaction() as session:
            yield session
            self.holding.set()
            self.release.wait(10)


def held_users(container: Container) -> tuple[UserService, HeldDatabase]:
    held = HeldDatabase(container.db)
    return UserService(held, container.hasher, container.tokens, container.sessions,
                       refresh_grace_seconds=container.settings.refresh_reuse_grace_seconds), held


def family_rows(db: Database, token: str) -> list[RefreshToken]:
    family = uuid.UUID(jwt.decode(token, options={"verify_signature": False})["fam"])
    with db.read() as session:
        return list(session.scalars(select(RefreshToken).where(RefreshToken.family_id == family)))


def run(target: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def body() -> None:
        try:
            out.append(target(*args))
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever happened
            out.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, out


# --- a revoked family never gains a live member -------------------------------------------------------------------


def test_logout_racing_a_refresh_leaves_no_live_member(api: Api, container: Container, db: Database) -> None:
    """GIVEN a refresh that has rotated the token but not yet committed
    WHEN the session logs out meanwhile
    THEN the successor the refresh then commits is revoked too: it cannot refresh and its access token is dead."""
    user = api.signup()
    users, held = held_users(container)
    refreshing, result = run(users.refresh, user["refresh_token"], RequestMeta())
    assert held.holding.wait(10)
    claims = container.tokens.verify(user["access_token"], ACCESS)
    logging_out, logout_result = run(container.users.logout, claims, None, RequestMeta())
    time.sleep(0.3)  # the logout is now waiting (on the family lock; before the fix, on the old row)
    held.release.set()
    refreshing.join(10)
    logging_out.join(10)
    assert logout_result == [None]
    successor = result[0]
    assert not isinstance(successor, Exception), successor
    assert [r for r in family_rows(db, user["refresh_token"]) if r.revoked_at is None] == []
    assert_envelope(refresh(api, successor.refresh_token), 401, "AUTHENTICATION_ERROR")
    assert_dead(api, successor.access_token)


def test_reuse_revocation_racing_a_refresh_leaves_no_live_member(api: Api, container: Container,
                                                                 db: Database) -> None:
    """GIVEN a stolen token A, rotated long ago into B, and B being rotated into C (not yet committed)
    WHEN the thief replays A (reuse: the family is revoked)
    THEN C is revoked as well."""
    user = api.signup()
    second = refresh(api, user["refresh_token"]).json_body
    backdate_use(db, user["refresh_token"], 3600)
    users, held = held_users(container)
    refreshing, result = run(users.refresh, second["refresh_token"], RequestMeta())
    assert held.holding.wait(10)
    replaying, replay_result = run(container.users.refresh, user["refresh_token"], RequestMeta())
    time.sleep(0.3)
    held.release.set()
    refreshing.join(10)
    replaying.join(10)
    assert isinstance(replay_result[0], AuthenticationError)
    assert [r for r in family_rows(db, user["refresh_token"]) if r.revoked_at is None] == []
    third = result[0]
    assert_envelope(refresh(api, third.refresh_token), 401, "AUTHENTICATION_ERROR")
    assert "auth.refresh_reuse_detected" in events(db)


def test_free_running_refresh_and_logout_races_never_leave_a_live_member(api: Api, container: Container,
                                                                         db: Database) -> None:
    """Real threads, no choreography: whichever wins, the family ends with no live refresh token."""
    for _ in range(15):
        user = api.signup()
        claims = container.tokens.verify(user["access_token"], ACCESS)
        barrier = threading.Barrier(2)

        def do_refresh(token: str = user["refresh_token"], gate: threading.Barrier = barrier) -> Any:
            gate.wait()
            return container.users.refresh(token, RequestMeta())

        def do_logout(c: Any = claims, gate: threading.Barrier = barrier) -> Any:
            gate.wait()
            return container.users.logout(c, None, RequestMeta())

        threads = [run(do_refresh), run(do_logout)]
        for thread, _out in threads:
            thread.join(10)
        assert threads[1][1] == [None]
        assert [r for r in family_rows(db, user["refresh_token"]) if r.revoked_at is None] == []


# --- a retried refresh gets its successor -------------------------------------------------------------------------


def test_a_retried_refresh_within_the_grace_window_gets_the_same_successor(api: Api, db: Database) -> None:
    user = api.signup()
    first = refresh(api, user["refresh_token"])
    assert first.status_code == 200
    retry = refresh(api, user["refresh_token"])  # the client never saw `first`
    assert retry.status_code == 200, retry.json_body
    assert retry.json_body["refresh_token"] == first.json_body["refresh_token"]
    assert api.call("GET", "/agents", token=retry.json_body["access_token"]).status_code == 200
    assert api.call("GET", "/agents", token=user["access_token"]).status_code == 200  # family not revoked
    assert refresh(api, retry.json_body["refresh_token"]).status_code == 200  # and the session goes on
    assert "auth.refresh_retried" in events(db) and "auth.refresh_reuse_detected" not in events(db)


def test_a_presentation_after_the_grace_window_is_still_reuse(api: Api, db: Database) -> None:
    user = api.signup()
    rotated = refresh(api, user["refresh_token"]).json_body
    backdate_use(db, user["refresh_token"], 11)  # the default window is 10 s
    assert_envelope(refresh(api, user["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert_envelope(refresh(api, rotated["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert_dead(api, rotated["access_token"])
    assert "auth.refresh_reuse_detected" in events(db)


def test_no_grace_once_the_successor_was_used(api: Api, db: Database) -> None:
    """The session moved on (B was rotated into C): A presented again, however soon, is a replay."""
    user = api.signup()
    second = refresh(api, user["refresh_token"]).json_body
    third = refresh(api, second["refresh_token"]).json_body
    assert_envelope(refresh(api, user["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert_envelope(refresh(api, third["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert "auth.refresh_reuse_detected" in events(db)


def test_concurrent_retries_of_one_token_all_get_the_one_successor(api: Api, container: Container,
                                                                   db: Database) -> None:
    user = api.signup()
    attempts = 8
    barrier = threading.Barrier(attempts)

    def attempt() -> Any:
        barrier.wait()
        return container.users.refresh(user["refresh_token"], RequestMeta())

    threads = [run(attempt) for _ in range(attempts)]
    for thread, _out in threads:
        thread.join(30)
    results = [out[0] for _thread, out in threads]
    assert all(not isinstance(r, Exception) for r in results), results
    assert len({r.refresh_token for r in results}) == 1
    happened = events(db)
    assert happened.count("auth.refresh") == 1 and happened.count("auth.refresh_retried") == attempts - 1
    live = [r for r in family_rows(db, user["refresh_token"]) if r.revoked_at is None and r.used_at is None]
    assert len(live) == 1


# --- revocation survives the loss of Redis ------------------------------------------------------------------------


def forget_everything(container: Container) -> None:
    """What a Redis restart without persistence (or a failover to a lagging replica) leaves: no keys."""
    for key in container.redis.scan_iter(match=f"{container.settings.redis_key_prefix}*", count=1000):
        container.redis.delete(key)


def test_a_logout_survives_redis_forgetting_its_keys(api: Api, container: Container) -> None:
    user = api.signup()
    assert api.call("POST", "/auth/logout", token=user["access_token"]).status_code == 204
    forget_everything(container)
    assert_dead(api, user["access_token"])  # the family is revoked in Postgres, and that is what counts
    fam = jwt.decode(user["access_token"], options={"verify_signature": False})["fam"]
    assert container.redis.get(container.sessions.family_key(fam)) == b"1"  # and now cached again


def test_a_reuse_revocation_whose_redis_write_was_lost_still_kills_the_family(api: Api, container: Container,
                                                                              db: Database) -> None:
    user = api.signup()
    rotated = refresh(api, user["refresh_token"]).json_body
    assert api.call("GET", "/agents", token=rotated["access_token"]).status_code == 200  # cached as live
    backdate_use(db, user["refresh_token"], 60)
    assert_envelope(refresh(api, user["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    forget_everything(container)
    assert_dead(api, rotated["access_token"])


def test_a_live_family_is_read_from_postgres_once_then_cached(api: Api, container: Container,
                                                              db: Database) -> None:
    user = api.signup()
    forget_everything(container)
    assert api.call("GET", "/agents", token=user["access_token"]).status_code == 200
    fam = jwt.decode(user["access_token"], options={"verify_signature": False})["fam"]
    key = container.sessions.family_key(fam)
    assert container.redis.get(key) == b"0"
    assert 0 < container.redis.ttl(key) <= container.settings.session_family_cache_ttl_seconds
    # A revocation overwrites the cached "live" at once.
    assert api.call("POST", "/auth/logout", token=user["access_token"]).status_code == 204
    assert container.redis.get(key) == b"1"
    assert_dead(api, user["access_token"])
    with db.read() as session:
        assert session.scalar(text("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")) == 0
        assert session.scalars(select(AuditLog.event_type)).all()[-1] == "auth.logout"
