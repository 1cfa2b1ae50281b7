"""The `communication` agent: one agent sends a message to another, or to all of your agents of a type.

Delivery writes the recipient's inbox (`agent_messages`, read with
`GET /agents/{id}/messages`) in one short transaction, keyed on the task: a
rerun of the task (after a crash) reports the messages it already sent
instead of sending them again. A recipient that is missing,
another user's, deleted or inactive — or a type you have no agents of — makes
the message undeliverable: it is kept with the reason and listed in the
result, never silently dropped. Offline agents still receive (they read their
inbox when they are back).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.domain.agents import AGENT_TYPES
from chalicelib.errors import AgentError

MAX_BODY_BYTES = 64 * 1024


class SenderNotFoundError(AgentError):
    code = "SENDER_NOT_FOUND"


class CommunicationInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_agent_id: uuid.UUID | None = Field(
        default=None, description="The sending agent (one of yours). Omitted: this communication agent.")
    to_agent_id: uuid.UUID | None = Field(default=None, description="One recipient agent.")
    to_type: str | None = Field(default=None, description="Or: every one of your agents of this type.")
    body: dict[str, Any] | str = Field(description="The message: a JSON object, or text (stored as {\"text\": ...}).")

    @field_validator("to_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in AGENT_TYPES:
            raise ValueError(f"unknown agent type {value!r}; expected one of: {', '.join(AGENT_TYPES)}")
        return value

    @field_validator("body")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | str) -> dict[str, Any] | str:
        if isinstance(value, str) and not value.strip():
            raise ValueError("body must not be empty")
        if len(json.dumps(value).encode()) > MAX_BODY_BYTES:
            raise ValueError(f"body must be at most {MAX_BODY_BYTES} bytes as JSON")
        return value

    @model_validator(mode="after")
    def _one_destination(self) -> CommunicationInput:
        if (self.to_agent_id is None) == (self.to_type is None):
            raise ValueError("give exactly one of to_agent_id or to_type")
        return self


class CommunicationAgent(Agent):
    type = "communication"
    Input = CommunicationInput
    description = ("Delivers a message from one of your agents to another agent, or to all your agents of a type; "
                   "recipients read it from GET /agents/{id}/messages. Undeliverable messages are reported with the "
                   "reason.")
    capabilities = ("direct-message", "broadcast-by-type", "inbox", "undeliverable-report")
    example_input = {"to_type": "validation",
                     "body": {"subject": "schema v2", "text": "Orders now carry a currency field; please re-check."}}

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, CommunicationInput)
        if ctx is None:
            raise AgentError("the communication agent needs the database (no task context)")
        from chalicelib.db.models import Agent as AgentRow
        from chalicelib.services.messages import Envelope, deliver_to_agent, deliver_to_type, sent_by_task

        sender_id = data.from_agent_id or ctx.agent_id
        with ctx.transaction() as session:
            sender = session.get(AgentRow, sender_id)
            if sender is None or sender.user_id != ctx.user_id or sender.deleted_at is not None:
                raise SenderNotFoundError("the sending agent is not one of your agents",
                                          {"from_agent_id": str(sender_id)})
            body = data.body if isinstance(data.body, dict) else {"text": data.body}
            env = Envelope(user_id=ctx.user_id, sender_id=sender.id, task_id=ctx.task_id, body=body, now=ctx.now)
            # Delivery commits before the task's result: a rerun after a crash reports what was sent.
            delivery = sent_by_task(session, ctx.task_id)
            if delivery is None and data.to_agent_id is not None:
                delivery = deliver_to_agent(session, env, data.to_agent_id)
            elif delivery is None:
                assert data.to_type is not None
                delivery = deliver_to_type(session, env, data.to_type)
        return AgentOutput(
            output={"sender_agent_id": str(sender.id),
                    "to": {"agent_id": str(data.to_agent_id)} if data.to_agent_id else {"type": data.to_type},
                    "delivered_count": len(delivery.delivered), "undeliverable_count": len(delivery.undeliverable),
                    "delivered": delivery.delivered, "undeliverable": delivery.undeliverable},
            metrics={"messages_delivered": len(delivery.delivered),
                     "messages_undeliverable": len(delivery.undeliverable)},
        )
