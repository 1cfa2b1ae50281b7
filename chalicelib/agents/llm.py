"""The `llm` agent: a prompt (with an optional system prompt and history) in, a completion out.

The answer is the model's text as given; the result records which provider
and model produced it, its token usage and latency. With no provider
configured the task fails with PROVIDER_NOT_CONFIGURED: there is no
fallback that would invent an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.agents.provider_support import load_config, open_session
from chalicelib.providers.base import Message
from chalicelib.providers.config import ProviderConfig

MAX_TEXT = 200_000


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1, max_length=MAX_TEXT)


class LLMInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_TEXT, description="The user's message to answer.")
    system: str | None = Field(default=None, max_length=20_000,
                               description="System prompt for this task (overrides the agent's system_prompt).")
    messages: list[ChatMessage] = Field(default_factory=list, max_length=100,
                                        description="Earlier turns of the conversation, oldest first.")


class LLMConfig(ProviderConfig):
    system_prompt: str | None = Field(default=None, max_length=20_000,
                                      description="Default system prompt for this agent's tasks.")


class LLMAgent(Agent):
    type = "llm"
    Input = LLMInput
    Config = LLMConfig
    provider_backed = True
    description = ("Sends a prompt (with an optional system prompt and conversation history) to the configured "
                   "language model and returns its completion, token usage and latency.")
    capabilities = ("chat-completion", "system-prompt", "conversation-history", "openai-compatible", "bedrock")
    example_input = {
        "system": "You answer in one short paragraph.",
        "messages": [{"role": "user", "content": "What is an SQS dead-letter queue?"},
                     {"role": "assistant", "content": "A queue that receives messages that failed repeatedly."}],
        "prompt": "How many receives before a message moves there?",
    }

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, LLMInput)
        cfg = load_config(LLMConfig, config)
        session = open_session(cfg, ctx)
        history = [Message(m.role, m.content) for m in data.messages]
        completion = session.complete([*history, Message("user", data.prompt)],
                                      system=data.system if data.system is not None else cfg.system_prompt)
        return AgentOutput(
            output={"text": completion.text, "model": completion.model, "provider": completion.provider,
                    "finish_reason": completion.finish_reason, "usage": completion.usage.as_dict(),
                    "latency_ms": completion.latency_ms, "attempts": completion.attempts},
            metrics=session.metrics(),
        )
