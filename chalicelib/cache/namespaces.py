"""Cache namespaces: each has its own TTL (Settings) and can be cleared on its own."""

from __future__ import annotations

from enum import StrEnum


class Namespace(StrEnum):
    AGENTS = "agents"  # agent records (config, status, owner), key = agent id
    TASK_RESULTS = "task_results"  # final tasks with their result, key = task id
    SESSIONS = "sessions"  # per-user session / token-check state, for the auth layer
