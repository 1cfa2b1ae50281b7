"""Alembic migrations are the live schema: they must match the models, on Postgres and SQLite, up and down."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from chalicelib.db.migrate import downgrade, upgrade
from chalicelib.db.models import Base


def diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_postgres_schema_matches_the_models(pg_url: str) -> None:
    assert diff(pg_url) == []


def test_sqlite_upgrade_downgrade_upgrade_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
    assert diff(url) == []
