"""Engines: platform-provided, synchronous computations a workflow step (or the API) can run by name.

An engine is not an agent: it has no agent row, no queue and no task. A workflow's engine step is answered
in-process by the workflow control consumer (chalicelib.workflows.control), which resolves the step's input,
checks it against the engine's `input_schema`, calls `run`, and stores the output on the run step. Engines
therefore get a narrow `EngineContext` — who asked, a short-transaction opener and the settings — never the
container (the same narrowing as `chalicelib.agents.base.AgentContext`).

The engines issue fills the registry (`chalicelib.engines.registry`); tests register their own.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.config import Settings


@dataclass(frozen=True)
class EngineContext:
    """What an engine may use besides its input."""

    user_id: uuid.UUID
    #: opens a short transaction (committed when the block ends); none is open while `run` computes.
    transaction: Callable[[], AbstractContextManager[Session]]
    settings: Settings
    #: the run and step asking, when a workflow asks (None from the API).
    run_id: uuid.UUID | None = None
    step_id: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """One engine. Subclasses set the class attributes and implement `run`.

    `input_schema`/`output_schema` are JSON Schemas (draft 2020-12): the input is checked before `run`
    (a mismatch fails the step with ENGINE_INPUT_INVALID, listing every violation), and `example` is a
    valid input shown by `GET /engines`. `run` must be deterministic for its input and idempotent for the
    step: a redelivered control message may run it again after a crash.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    input_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    output_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    example: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def run(self, ctx: EngineContext, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002 - the contract's name
        """The engine's output (a JSON object)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema,
                "output_schema": self.output_schema, "example": self.example}
