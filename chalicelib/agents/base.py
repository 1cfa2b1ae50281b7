"""The contract every agent type implements.

An agent module defines one `Agent` subclass: its input model (pydantic,
validated at `POST /tasks` so bad input is a 422, not a failed task), and
`run`, which does the real work and returns what it measured. Heavy,
type-specific libraries are imported inside `run`, never at module import,
so the API and the other consumers do not pay for them at cold start.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel


@dataclass(frozen=True)
class AgentOutput:
    output: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


class Agent(ABC):
    #: The agent type this class implements (matches `chalicelib.domain.agents.AGENT_TYPES`).
    type: ClassVar[str]
    #: A pydantic model for `tasks.input_data`.
    Input: ClassVar[builtins.type[BaseModel]]
    #: Human description and capabilities, shown to clients.
    description: ClassVar[str] = ""
    capabilities: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, data: BaseModel, config: Mapping[str, Any]) -> AgentOutput:
        """Do the work. Raise `chalicelib.errors.AgentError` for a failure the user should see."""
