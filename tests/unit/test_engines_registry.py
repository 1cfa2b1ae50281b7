"""The engine registry: registration, lookup, input checks."""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from typing import Any

import pytest

from chalicelib.config import Settings
from chalicelib.engines import Engine, EngineContext, registry


class Doubler(Engine):
    name = "test-doubler"
    description = "doubles n"
    input_schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    output_schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    example = {"n": 2}

    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
        return {"n": input["n"] * 2}


@pytest.fixture
def doubler() -> Any:
    engine = registry.register(Doubler())
    yield engine
    registry.unregister(engine.name)


def test_registered_engine_is_found_and_runs(doubler: Engine) -> None:
    assert "test-doubler" in registry.names()
    engine = registry.get("test-doubler")
    ctx = EngineContext(user_id=uuid.uuid4(), transaction=nullcontext, settings=Settings(_env_file=None))  # type: ignore[arg-type,call-arg]
    assert engine.run(ctx, registry.validate_input(engine, engine.example)) == {"n": 4}
    assert engine.describe()["input_schema"]["required"] == ["n"]


def test_a_taken_name_is_refused(doubler: Engine) -> None:
    with pytest.raises(ValueError):
        registry.register(Doubler())


def test_unknown_engine_is_a_clear_error() -> None:
    with pytest.raises(registry.EngineNotFoundError) as info:
        registry.get("no-such-engine")
    assert info.value.code == "ENGINE_NOT_FOUND"


def test_input_violations_are_listed(doubler: Engine) -> None:
    with pytest.raises(registry.EngineInputInvalidError) as info:
        registry.validate_input(doubler, {"n": "x"})
    assert info.value.details["errors"][0]["path"] == "/n"
