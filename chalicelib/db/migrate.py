"""Run Alembic migrations programmatically (local runtime, tests, deploy scripts)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def head_revisions() -> list[str]:
    """The revisions `upgrade(url)` ends at, from the migration scripts (no database needed)."""
    from alembic.script import ScriptDirectory

    return sorted(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def current_revisions(database_url: str) -> list[str]:
    """What the database says it is at (alembic_version), read on a connection of its own."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return sorted(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


if __name__ == "__main__":  # python -m chalicelib.db.migrate [revision]
    import os

    upgrade(os.environ["DATABASE_URL"], sys.argv[1] if len(sys.argv) > 1 else "head")
