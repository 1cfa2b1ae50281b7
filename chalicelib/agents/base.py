"""The contract every agent type implements.

An agent module defines one `Agent` subclass: its input model (pydantic,
validated at `POST /tasks` so bad input is a 422, not a failed task), its
configuration model (validated when an agent is created or updated), an
example input, and `run`, which does the real work and returns what it
measured. Heavy, type-specific libraries are imported inside `run`, never at
module import, so the API and the other consumers do not pay for them at cold
start.
"""

from __future__ import annotations

import builtins
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.container import Container


class NoConfig(BaseModel):
    """The default configuration model: an agent type with no settings accepts only `{}`."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class AgentOutput:
    output: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    #: True when the task is not finished yet (an orchestrator waiting for its subtasks):
    #: the task stays `processing` and no result row is written now.
    pending: bool = False


@dataclass
class AgentContext:
    """What an agent may use besides its input: who asked, and the platform's adapters.

    `session` is the consumer's batch transaction (inside this record's savepoint):
    rows an agent writes through it commit or roll back with the task's result.
    """

    task_id: uuid.UUID
    agent_id: uuid.UUID
    user_id: uuid.UUID
    agent_type: str
    session: Session
    container: Container
    now: datetime
    attempt: int = 1
    extras: dict[str, Any] = field(default_factory=dict)


class Agent(ABC):
    #: The agent type this class implements (matches `chalicelib.domain.agents.AGENT_TYPES`).
    type: ClassVar[str]
    #: A pydantic model for `tasks.input_data`.
    Input: ClassVar[builtins.type[BaseModel]]
    #: A pydantic model for `agents.config` (model, thresholds, limits...).
    Config: ClassVar[builtins.type[BaseModel]] = NoConfig
    #: Human description and capabilities, shown by `GET /agent-types`.
    description: ClassVar[str] = ""
    capabilities: ClassVar[tuple[str, ...]] = ()
    #: A realistic `input_data`, shown by `GET /agent-types` (and checked against `Input` by a test).
    example_input: ClassVar[dict[str, Any]] = {}
    #: True when the type needs a language-model provider to do its work.
    provider_backed: ClassVar[bool] = False
    #: True for CPU-bound pure types (no database, no provider): runs in a forked child with a memory limit
    #: and a hard deadline (chalicelib.agents.sandbox), so a C-level loop cannot outlive its budget.
    isolated: ClassVar[bool] = False

    def runs_isolated(self, data: BaseModel) -> bool:
        """Whether this input runs in the sandbox's child process (a type with a DB mode says no for it)."""
        return self.isolated

    @abstractmethod
    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        """Do the work. Raise `chalicelib.errors.AgentError` for a failure the user should see.

        `ctx` is None only in unit tests of agents that need nothing but their input.
        """
