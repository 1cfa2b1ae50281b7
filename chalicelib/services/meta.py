"""Request metadata passed from entry points into services (kept free of heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestMeta:
    """Who is calling from where, for the audit trail."""

    client_ip: str | None = None
    request_id: str | None = None
