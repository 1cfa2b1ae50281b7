"""Migration 0003 (refresh-token families, users.token_version): up and down on Postgres and SQLite, keeping
the users that were already there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from chalicelib.db.migrate import downgrade, upgrade
from tests.conftest import PG_ADMIN_URL


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    name = f"ymera_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _round_trip(url: str) -> None:
    upgrade(url, "0002")
    engine = create_engine(url)
    user_id = uuid.uuid4()
    try:
        with engine.begin() as conn:  # a user from before the migration
            conn.execute(text("INSERT INTO users (id, username, email, password_hash, role, is_active, created_at, "
                              "updated_at) VALUES (:id, 'old', 'old@example.com', 'h', 'user', true, "
                              "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                         {"id": user_id.hex if url.startswith("sqlite") else str(user_id)})

        upgrade(url, "0003")
        schema = inspect(engine)
        assert {c["name"] for c in schema.get_columns("refresh_tokens")} == {
            "jti", "family_id", "user_id", "issued_at", "expires_at", "used_at", "revoked_at", "replaced_by"}
        assert {i["name"] for i in schema.get_indexes("refresh_tokens")} == {
            "ix_refresh_tokens_family_id", "ix_refresh_tokens_user_id_revoked_at"}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT token_version FROM users WHERE username = 'old'")).scalar_one() == 0

        downgrade(url, "0002")
        schema = inspect(engine)
        assert "refresh_tokens" not in schema.get_table_names()
        assert "token_version" not in {c["name"] for c in schema.get_columns("users")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM users")).scalar_one() == 1

        upgrade(url)  # and up again, to head
        assert "refresh_tokens" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_0003_up_down_up_on_postgres(fresh_pg: str) -> None:
    _round_trip(fresh_pg)


def test_0003_up_down_up_on_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'm.db'}")
