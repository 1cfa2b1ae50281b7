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
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.config import Settings
    from chalicelib.providers.config import ProviderConfig
    from chalicelib.providers.session import LLMSession


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


class ProviderPort(Protocol):
    """Language-model sessions (chalicelib.providers.registry.Providers)."""

    def is_configured(self, config: ProviderConfig) -> bool: ...

    def session(self, config: ProviderConfig, *, user_id: uuid.UUID | None = None,
                task_id: uuid.UUID | None = None) -> LLMSession: ...


class AlertPort(Protocol):
    """The alert topic (chalicelib.services.alerts.AlertPublisher)."""

    def publish(self, alert: Any, context: dict[str, Any] | None = None) -> dict[str, Any]: ...


class WatchdogPort(Protocol):
    """Health, heartbeat and DLQ checks (chalicelib.services.watchdog.Watchdog)."""

    def run(self, transaction: Callable[[], AbstractContextManager[Session]], *, now: datetime,
            stale_seconds: int, user_id: uuid.UUID | None, checks: Any = ...) -> Any: ...


class AgentPorts(Protocol):
    """The few platform adapters an agent may use; the composition root provides them lazily."""

    @property
    def settings(self) -> Settings: ...

    @property
    def providers(self) -> ProviderPort: ...

    @property
    def alerts(self) -> AlertPort: ...

    @property
    def watchdog(self) -> WatchdogPort: ...

    def transaction(self) -> AbstractContextManager[Session]: ...

    @property
    def plans(self) -> PlanPort: ...


class PlanPort(Protocol):
    """Starts an orchestrator task's plan as a workflow run (chalicelib.services.orchestration.PlanRuns)."""

    def start(self, task_id: uuid.UUID, goal: str, plan: Sequence[Any], *, drafted: bool,
              bounds: Any) -> uuid.UUID: ...


class NoDatabaseError(RuntimeError):
    """An agent asked for the database where there is none (a unit test without ports)."""


@dataclass
class AgentContext:
    """What an agent may use besides its input: who asked, and a few platform ports.

    No transaction is open while an agent runs: an agent that needs the database opens
    a short one with `ctx.transaction()` (committed when the block ends), so no connection
    is checked out while it computes or waits on a model. Whatever it writes commits on its
    own, before the task's result: writes must be idempotent for the task (a redelivery
    may run the agent again after a crash).
    """

    task_id: uuid.UUID
    agent_id: uuid.UUID
    user_id: uuid.UUID
    agent_type: str
    now: datetime
    attempt: int = 1
    ports: AgentPorts | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: whether the task was cancelled since it was claimed (the consumer gives a cheap, throttled query).
    cancel_check: Callable[[], bool] | None = None

    def cancelled(self) -> bool:
        """True once the task is cancelled: stop working (call between steps; model calls check it themselves)."""
        return self.cancel_check is not None and self.cancel_check()

    def raise_if_cancelled(self) -> None:
        """Stop here if the task was cancelled: the consumer discards the run and the task stays `cancelled`."""
        if self.cancelled():
            from chalicelib.errors import TaskCancelledError

            raise TaskCancelledError("the task was cancelled while it ran", {"task_id": str(self.task_id)})

    def transaction(self) -> AbstractContextManager[Session]:
        """A short database transaction: committed when the `with` block ends, rolled back on error."""
        if self.ports is None:
            raise NoDatabaseError(f"the {self.agent_type} agent needs the database (no task context)")
        return self.ports.transaction()

    @property
    def settings(self) -> Settings | None:
        return self.ports.settings if self.ports is not None else None

    @property
    def providers(self) -> ProviderPort | None:
        if self.ports is None:
            return None
        providers = self.ports.providers
        return _CancellableProviders(providers, self) if self.cancel_check is not None else providers


@dataclass(frozen=True)
class _CancellableProviders:
    """The provider port, with every session it opens checking the task's cancellation before each model call."""

    inner: ProviderPort
    ctx: AgentContext

    def is_configured(self, config: ProviderConfig) -> bool:
        return self.inner.is_configured(config)

    def session(self, config: ProviderConfig, *, user_id: uuid.UUID | None = None,
                task_id: uuid.UUID | None = None) -> LLMSession:
        session = self.inner.session(config, user_id=user_id, task_id=task_id)
        session.before_call = self.ctx.raise_if_cancelled
        return session


@dataclass
class StaticPorts:
    """Ports given as plain values (tests, scripts); any left None is unavailable."""

    settings: Any = None
    providers: Any = None
    alerts: Any = None
    watchdog: Any = None
    plans: Any = None
    transactions: Callable[[], AbstractContextManager[Session]] | None = None

    def transaction(self) -> AbstractContextManager[Session]:
        if self.transactions is None:
            raise NoDatabaseError("no database port was given")
        return self.transactions()


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
