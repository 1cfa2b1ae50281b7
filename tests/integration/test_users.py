"""Users and RBAC over the API: who may read, list and change which account, mass assignment, password
change and deactivation taking effect on the very next request, the admin CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from sqlalchemy import create_engine, select, text

from chalicelib.admin import main as admin_main
from chalicelib.container import Container
from chalicelib.db.models import AuditLog, RefreshToken, User
from chalicelib.db.session import Database
from tests.integration.conftest import Api
from tests.integration.test_api_auth import assert_envelope
from tests.integration.test_auth_tokens import PASSWORD, assert_dead, events, login, refresh

ROOT = Path(__file__).resolve().parents[2]


def user_id(tokens: dict[str, Any]) -> str:
    return str(jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"])


@pytest.fixture
def admin(api: Api, container: Container) -> dict[str, Any]:
    """An admin made the only way there is: the CLI (password from the environment)."""
    username = f"root{uuid.uuid4().hex[:6]}"
    assert admin_main(["create-admin", "--username", username, "--email", f"{username}@example.com"],
                      env={"YMERA_ADMIN_PASSWORD": PASSWORD}) == 0
    return {"username": username, **login(api, username)}


def test_a_user_reads_and_updates_only_themself(api: Api, other_api: Api) -> None:
    alice, bob = api.signup(), other_api.signup()
    me = api.call("GET", f"/users/{user_id(alice)}")
    assert me.status_code == 200 and me.json_body["username"] == alice["username"]
    assert set(me.json_body) == {"id", "username", "email", "role", "is_active", "created_at"}

    # Bob's account does not exist as far as Alice can tell: same 404 as a random id.
    for target in (user_id(bob), str(uuid.uuid4()), "not-a-uuid"):
        assert_envelope(api.call("GET", f"/users/{target}"), 404, "NOT_FOUND")
        assert_envelope(api.call("PUT", f"/users/{target}", {"email": "x@example.com"}), 404, "NOT_FOUND")
        assert_envelope(api.call("PUT", f"/users/{target}/password",
                                 {"current_password": PASSWORD, "new_password": "whatever123"}), 404, "NOT_FOUND")

    r = api.call("PUT", f"/users/{user_id(alice)}", {"email": "New@Example.com"})
    assert r.status_code == 200 and r.json_body["email"] == "new@example.com"
    assert other_api.call("GET", f"/users/{user_id(bob)}").json_body["email"] == f"{bob['username']}@example.com"


def test_listing_users_is_admin_only_with_cursor_pagination(api: Api, other_api: Api,
                                                            admin: dict[str, Any]) -> None:
    plain = api.signup()
    for _ in range(3):
        other_api.signup()
    error = assert_envelope(api.call("GET", "/users", token=plain["access_token"]), 403, "AUTHORIZATION_ERROR")
    assert error["details"] == {"permission": "users:list"}

    seen: list[str] = []
    cursor = None
    while True:
        path = "/users?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.call("GET", path, token=admin["access_token"]).json_body
        assert len(page["items"]) <= 2
        seen += [u["username"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5  # admin, plain, three others: each exactly once
    assert "password" not in str(seen) and all("hash" not in k for k in page["items"][0])
    assert_envelope(api.call("GET", "/users?cursor=garbage", token=admin["access_token"]), 422, "VALIDATION_ERROR")


def test_an_admin_reads_anyone(api: Api, other_api: Api, admin: dict[str, Any]) -> None:
    bob = other_api.signup()
    r = api.call("GET", f"/users/{user_id(bob)}", token=admin["access_token"])
    assert r.status_code == 200 and r.json_body["role"] == "user"


@pytest.mark.parametrize("body", [
    {"role": "admin"}, {"is_active": False}, {"id": str(uuid.uuid4())}, {"password_hash": "x"},
    {"password": "new password"}, {"created_at": "2020-01-01T00:00:00Z"}, {"token_version": 0},
    {"username": "renamed"}, {"email": "ok@example.com", "role": "admin"},
])
def test_mass_assignment_by_a_user_is_422_and_changes_nothing(api: Api, body: dict[str, Any]) -> None:
    me = api.signup()
    error = assert_envelope(api.call("PUT", f"/users/{user_id(me)}", body), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["type"] == "extra_forbidden"
    after = api.call("GET", f"/users/{user_id(me)}").json_body
    assert (after["role"], after["is_active"], after["email"]) == ("user", True, f"{me['username']}@example.com")


@pytest.mark.parametrize("body", [
    {"id": str(uuid.uuid4())}, {"password_hash": "x"}, {"token_version": 9}, {"updated_at": "2020-01-01T00:00:00Z"},
    {"role": "superuser"}, {"is_active": "false"}, {"is_active": None}, {},
])
def test_admins_cannot_mass_assign_either(api: Api, other_api: Api, admin: dict[str, Any],
                                          body: dict[str, Any]) -> None:
    bob = other_api.signup()
    r = api.call("PUT", f"/users/{user_id(bob)}", body, token=admin["access_token"])
    assert_envelope(r, 422, "VALIDATION_ERROR")


def test_email_is_the_owners_and_role_and_active_state_are_not_self_service(api: Api, other_api: Api,
                                                                            admin: dict[str, Any]) -> None:
    bob = other_api.signup()
    assert_envelope(api.call("PUT", f"/users/{user_id(bob)}", {"email": "mine@example.com"},
                             token=admin["access_token"]), 422, "VALIDATION_ERROR")
    assert_envelope(api.call("PUT", f"/users/{user_id(admin)}", {"role": "user"}, token=admin["access_token"]),
                    409, "CONFLICT")
    taken = f"{bob['username']}@example.com"
    assert_envelope(api.call("PUT", f"/users/{user_id(admin)}", {"email": taken}, token=admin["access_token"]),
                    409, "CONFLICT")


def test_deactivation_kills_tokens_on_the_next_request_and_reactivation_does_not_revive_them(
        api: Api, other_api: Api, admin: dict[str, Any], db: Database) -> None:
    bob = other_api.signup()
    assert other_api.call("GET", "/agents").status_code == 200  # Bob's state is now cached in Redis

    r = api.call("PUT", f"/users/{user_id(bob)}", {"is_active": False}, token=admin["access_token"])
    assert r.status_code == 200 and r.json_body["is_active"] is False

    assert_dead(other_api, bob["access_token"])
    assert_envelope(refresh(other_api, bob["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    denied = other_api.call("POST", "/auth/login", {"username": bob["username"], "password": PASSWORD}, token="")
    wrong = other_api.call("POST", "/auth/login", {"username": bob["username"], "password": "wrong!"}, token="")
    assert denied.status_code == wrong.status_code == 401
    assert denied.json_body["error"]["message"] == wrong.json_body["error"]["message"]

    api.call("PUT", f"/users/{user_id(bob)}", {"is_active": True}, token=admin["access_token"])
    assert_dead(other_api, bob["access_token"])  # old tokens stay dead
    assert api.call("GET", "/agents", token=login(other_api, bob["username"])["access_token"]).status_code == 200
    assert {"user.deactivated", "user.reactivated"} <= set(events(db))


def test_a_role_change_applies_to_existing_tokens_on_the_next_request(api: Api, other_api: Api,
                                                                      admin: dict[str, Any]) -> None:
    bob = other_api.signup()
    assert_envelope(other_api.call("GET", "/users"), 403, "AUTHORIZATION_ERROR")
    api.call("PUT", f"/users/{user_id(bob)}", {"role": "admin"}, token=admin["access_token"])
    assert other_api.call("GET", "/users").status_code == 200  # same token, new role
    api.call("PUT", f"/users/{user_id(bob)}", {"role": "user"}, token=admin["access_token"])
    assert_envelope(other_api.call("GET", "/users"), 403, "AUTHORIZATION_ERROR")


def test_password_change_ends_every_session_and_returns_a_new_one(api: Api, db: Database) -> None:
    me = api.signup()
    second = login(api, me["username"])
    path = f"/users/{user_id(me)}/password"

    error = assert_envelope(api.call("PUT", path, {"current_password": "not it", "new_password": "brand new pw"}),
                            422, "VALIDATION_ERROR")
    assert error["details"] == {"fields": ["current_password"]}
    assert api.call("GET", "/agents").status_code == 200  # a failed attempt changes nothing

    r = api.call("PUT", path, {"current_password": PASSWORD, "new_password": "brand new pw"})
    assert r.status_code == 200
    for old in (me, second):
        assert_dead(api, old["access_token"])
        assert_envelope(refresh(api, old["refresh_token"]), 401, "AUTHENTICATION_ERROR")
    assert api.call("GET", "/agents", token=r.json_body["access_token"]).status_code == 200
    assert refresh(api, r.json_body["refresh_token"]).status_code == 200
    assert_envelope(api.call("POST", "/auth/login", {"username": me["username"], "password": PASSWORD}, token=""),
                    401, "AUTHENTICATION_ERROR")
    assert login(api, me["username"], "brand new pw")["access_token"]
    assert {"user.password_change_failed", "user.password_changed"} <= set(events(db))
    with db.read() as session:  # the old families are revoked in Postgres, not merely outdated
        old_jtis = [jwt.decode(t["refresh_token"], options={"verify_signature": False})["jti"] for t in (me, second)]
        assert all(session.get(RefreshToken, jti).revoked_at is not None for jti in old_jtis)


def test_password_change_rules(api: Api, other_api: Api, admin: dict[str, Any]) -> None:
    me = api.signup()
    path = f"/users/{user_id(me)}/password"
    too_long = "é" * 36 + "x"  # 73 bytes
    assert_envelope(api.call("PUT", path, {"current_password": PASSWORD, "new_password": too_long}),
                    422, "VALIDATION_ERROR")
    assert_envelope(api.call("PUT", path, {"current_password": PASSWORD, "new_password": PASSWORD}),
                    422, "VALIDATION_ERROR")
    assert_envelope(api.call("PUT", path, {"current_password": PASSWORD, "new_password": "longenough",
                                           "password_hash": "x"}), 422, "VALIDATION_ERROR")
    # An admin can see the account, so the answer is "not allowed" rather than "not found".
    assert_envelope(other_api.call("PUT", path, {"current_password": PASSWORD, "new_password": "longenough"},
                                   token=admin["access_token"]), 403, "AUTHORIZATION_ERROR")


def test_an_account_deactivated_directly_in_the_database_is_refused_once_its_cache_entry_goes(
        api: Api, container: Container, db: Database) -> None:
    me = api.signup()
    assert api.call("GET", "/agents").status_code == 200
    with db.transaction() as session:  # an operator's SQL: no token version bump, no cache update
        session.execute(text("UPDATE users SET is_active = false WHERE id = :id"), {"id": user_id(me)})
    container.redis.delete(container.sessions.user_key(uuid.UUID(user_id(me))))  # e.g. the TTL ran out
    assert_dead(api, me["access_token"])


def test_user_state_is_cached_in_redis_with_the_session_ttl(api: Api, container: Container) -> None:
    me = api.signup()
    api.call("GET", "/agents")
    key = container.sessions.user_key(uuid.UUID(user_id(me)))
    assert container.redis.get(key) == b"1|user|0"
    assert 0 < container.redis.ttl(key) <= container.settings.session_cache_ttl_seconds


def test_the_per_request_check_is_one_redis_round_trip(api: Api, settings: Any, db: Database, aws: Any) -> None:
    """The rate limiter's script also reads the session keys: a signed-in request costs one round trip for
    both checks, and none of its own for the session."""
    from chalicelib.container import set_container
    from tests.integration.redis_trips import CountingRedis

    client = CountingRedis.connect(settings.redis_url)
    set_container(Container(settings.model_copy(update={"request_metrics_flush_seconds": 60.0}), database=db,
                            redis_client=client))
    api.signup()
    api.call("GET", "/agents")  # fills the cache
    client.reset_counts()
    for _ in range(5):
        assert api.call("GET", "/agents").status_code == 200
    assert client.trips == [("EVALSHA",)] * 5
    read = [str(key) for command in client.sent for key in command[3:3 + int(command[2])]]
    assert sum(f"{settings.redis_key_prefix}auth:" in key for key in read) == 5 * 3  # user, jti, family


def test_create_admin_never_takes_the_password_from_argv(api: Api, container: Container) -> None:
    with pytest.raises(SystemExit) as exc:
        admin_main(["create-admin", "--username", "x", "--email", "x@example.com", "--password", PASSWORD], env={})
    assert exc.value.code == 2  # argparse: unrecognised argument
    prompts: list[str] = []
    answers = iter(["prompted password", "prompted password"])

    def prompt(text_: str) -> str:
        prompts.append(text_)
        return next(answers)

    assert admin_main(["create-admin", "--username", "promptadmin", "--email", "p@example.com"], env={},
                      prompt=prompt) == 0
    assert len(prompts) == 2
    token = login(api, "promptadmin", "prompted password")["access_token"]
    assert api.call("GET", "/users", token=token).status_code == 200
    with pytest.raises(SystemExit, match="already registered"):
        admin_main(["create-admin", "--username", "promptadmin", "--email", "p@example.com"],
                   env={"YMERA_ADMIN_PASSWORD": "another password"})
    with pytest.raises(SystemExit, match="password"):
        admin_main(["create-admin", "--username", "shorty", "--email", "s@example.com"],
                   env={"YMERA_ADMIN_PASSWORD": "short"})


def test_create_admin_module_entry_point_on_a_fresh_sqlite_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    env = {**os.environ, "DATABASE_URL": url, "YMERA_ADMIN_PASSWORD": PASSWORD, "YMERA_STAGE": "development"}
    env.pop("REDIS_URL", None)
    for cmd in (["-m", "chalicelib.db.migrate"],
                ["-m", "chalicelib.admin", "create-admin", "--username", "root", "--email", "root@example.com"]):
        done = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert "created admin root" in done.stdout and PASSWORD not in done.stdout
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT role, is_active FROM users WHERE username = 'root'")).one() == ("admin", 1)
    engine.dispose()


def test_user_updates_write_audit_rows_without_secrets(api: Api, other_api: Api, admin: dict[str, Any],
                                                       db: Database) -> None:
    bob = other_api.signup()
    api.call("PUT", f"/users/{user_id(bob)}", {"role": "admin"}, token=admin["access_token"])
    with db.read() as session:
        row = session.scalars(select(AuditLog).where(AuditLog.event_type == "user.updated")).one()
        hashes = [u.password_hash for u in session.scalars(select(User))]
    assert row.user_id == uuid.UUID(user_id(admin)) and row.resource_id == user_id(bob)
    assert row.details == {"fields": ["role"], "role": "admin"}
    with db.read() as session:
        all_details = " ".join(str(r.details) for r in session.scalars(select(AuditLog)))
    assert not any(h in all_details for h in hashes) and "eyJ" not in all_details  # no hashes, no JWTs


# --- cache coherence between the per-request check and writers ------------------------------------------------


class WriterDuringRead(Database):
    """A real Database whose next read() runs `during` right after the read and before the reader goes on:
    the reader holds the old row while a writer commits."""

    during: Any = None

    def read(self) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def wrapped() -> Any:
            with Database.read(self) as session:
                yield session
            action, self.during = self.during, None
            if action is not None:
                action()

        return wrapped()


def test_a_reader_holding_the_old_row_cannot_cache_it_over_a_writers_change(
        api: Api, other_api: Api, admin: dict[str, Any], container: Container) -> None:
    from chalicelib.auth.guard import SessionGuard
    from chalicelib.services.meta import RequestMeta

    bob = other_api.signup()
    bob_id = uuid.UUID(user_id(bob))
    s = container.settings
    racing_db = WriterDuringRead(container.db.engine)
    reader = SessionGuard(racing_db, container.redis, key_prefix=s.redis_key_prefix,
                          state_ttl=s.session_cache_ttl_seconds, access_ttl=s.access_token_ttl_seconds)
    admin_claims = container.tokens.verify(admin["access_token"], "access")
    racing_db.during = lambda: container.accounts.update(admin_claims, bob_id, {"is_active": False}, RequestMeta())
    claims = container.tokens.verify(bob["access_token"], "access")

    reader.check(claims)  # read "active" just before the deactivation committed: this request is served

    assert container.redis.get(reader.user_key(bob_id)) == b"0|user|1"  # the writer's state, not the reader's
    assert_dead(other_api, bob["access_token"])


class LosesPublishes(redis.Redis):
    """A real client whose SETs of session state fail (as if Redis went away right after the commit)."""

    def set(self, name: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if ":auth:user:" in str(name) and value != b"-":
            raise redis.ConnectionError("connection lost")
        return super().set(name, value, *args, **kwargs)


def test_if_publishing_the_new_state_fails_readers_still_see_the_change(
        api: Api, other_api: Api, admin: dict[str, Any], settings: Any, db: Database, aws: Any) -> None:
    from chalicelib.container import set_container

    bob = other_api.signup()
    assert other_api.call("GET", "/agents").status_code == 200  # "active" is cached
    set_container(Container(settings, database=db, redis_client=LosesPublishes.from_url(settings.redis_url)))
    assert api.call("PUT", f"/users/{user_id(bob)}", {"is_active": False}, token=admin["access_token"]).status_code \
        == 200
    assert_dead(other_api, bob["access_token"])  # the writer's tombstone sends readers to Postgres


def test_with_redis_down_a_deactivation_is_refused_rather_than_half_applied(
        api: Api, other_api: Api, admin: dict[str, Any], settings: Any, db: Database, aws: Any) -> None:
    from chalicelib.container import set_container

    bob = other_api.signup()
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    set_container(Container(settings.model_copy(update={"rate_limit_enabled": False}), database=db,
                            redis_client=dead))
    error = assert_envelope(api.call("PUT", f"/users/{user_id(bob)}", {"is_active": False},
                                     token=admin["access_token"]), 503, "DEPENDENCY_UNAVAILABLE")
    assert error["details"] == {"dependency": "redis"}
    with db.read() as session:
        assert session.get(User, uuid.UUID(user_id(bob))).is_active is True
