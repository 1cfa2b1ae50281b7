"""An unset YMERA_STAGE is strict, and outside development the data stores must be reached over TLS."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chalicelib.config import Settings

SECRET = "j" * 40
TLS_DB = "postgresql+psycopg://u:p@db.example:5432/ymera?sslmode=require"


def test_a_missing_stage_is_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YMERA_STAGE", raising=False)
    settings = Settings(database_url="sqlite://", jwt_secret=SECRET)
    assert not settings.is_development
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(database_url="sqlite://", jwt_secret="short")
    with pytest.raises(ValidationError, match="sslmode"):
        Settings(database_url="postgresql://db/ymera", jwt_secret=SECRET)


def test_the_suite_itself_runs_as_the_test_stage() -> None:
    import os

    assert os.environ["YMERA_STAGE"] == "test"  # set at module level in tests/conftest.py


@pytest.mark.parametrize("url", ["postgresql://db/ymera", "postgresql+psycopg://db/ymera?sslmode=prefer",
                                 "postgresql://db/ymera?sslmode=disable", "postgres://db/x?sslmode=allow"])
def test_a_postgres_url_without_tls_is_refused_outside_development(url: str) -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL must set sslmode=require"):
        Settings(stage="prod", database_url=url, jwt_secret=SECRET)
    assert Settings(stage="development", database_url=url).database_url == url


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
def test_a_postgres_url_with_tls_is_accepted(mode: str) -> None:
    url = f"postgresql+psycopg://db/ymera?application_name=x&sslmode={mode}"
    assert Settings(stage="prod", database_url=url, jwt_secret=SECRET).database_url == url


def test_redis_must_be_rediss_outside_development() -> None:
    with pytest.raises(ValidationError, match="REDIS_URL must use rediss://"):
        Settings(stage="prod", database_url=TLS_DB, redis_url="redis://cache:6379/0", jwt_secret=SECRET)
    ok = Settings(stage="prod", database_url=TLS_DB, redis_url="rediss://cache:6379/0", jwt_secret=SECRET)
    assert ok.redis_url.startswith("rediss://")
    assert Settings(stage="test", database_url=TLS_DB, redis_url="redis://127.0.0.1:6379/0").redis_url


def test_a_refused_configuration_never_echoes_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic's str(ValidationError) prints the input: the ConfigError a cold start logs must not."""
    from chalicelib.config import ConfigError, get_settings

    monkeypatch.setenv("YMERA_STAGE", "prod")
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:hunter2@db/ymera")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError) as info:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert "sslmode=require" in str(info.value)
    assert "hunter2" not in str(info.value) and info.value.__cause__ is None
