"""Agent vocabulary: the twelve agent types of the seed and agent statuses."""

from __future__ import annotations

from enum import StrEnum


class AgentStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    OFFLINE = "offline"


#: Every agent type the platform knows, in the seed's order. Each has its own
#: queue; which ones have an implementation is `chalicelib.agents.registry`.
AGENT_TYPES: tuple[str, ...] = (
    "learning",
    "llm",
    "communication",
    "drafting",
    "editing",
    "enhancement",
    "examination",
    "metrics",
    "monitoring",
    "security",
    "validation",
    "orchestrator",
)
