"""The operator's endpoint catalog: named endpoints whose keys the platform holds.

    YMERA_LLM_ENDPOINTS='{"gpt": {"provider": "openai", "base_url": "https://api.openai.com/v1",
                                   "api_key_secret": "openai", "models": ["gpt-4o-mini"],
                                   "max_tokens_per_task": 20000}}'

(or the same JSON document in the Secrets Manager secret YMERA_LLM_ENDPOINTS_SECRET_ARN, whose entries
may also carry an inline `api_key`). The stage's YMERA_LLM_PROVIDER / MODEL / BASE_URL / API_KEY[_SECRET_ARN]
remain an implicit entry named "default" (unless the catalog defines "default" itself).

A key reference is the name of an environment variable (`api_key_env`) or a secret under
`ymera/<stage>/llm/` (`api_key_secret`: a name relative to that prefix, the full name, or its ARN) — the
only secrets the functions' role may read. An entry's key is sent only to that entry's base_url.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib.config import ConfigError
from chalicelib.providers.config import NAME_PATTERN

if TYPE_CHECKING:
    from chalicelib.config import Settings

DEFAULT_ALIAS = "default"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:(?P<name>.+)$")


def secret_prefix(stage: str) -> str:
    return f"ymera/{stage}/llm/"


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["openai", "bedrock"]
    base_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")
    api_key_secret: str | None = Field(default=None, min_length=1, max_length=2048)
    api_key: str | None = Field(default=None, repr=False)
    #: models agents may ask for; empty = any. The first is the default unless default_model says otherwise.
    models: tuple[str, ...] = ()
    default_model: str | None = None
    #: hard ceiling on one task's input+output tokens; an agent's max_total_tokens can only lower it.
    max_tokens_per_task: int = Field(default=20_000, ge=1)
    #: the operator's attempt timeout: only timeouts of attempts that waited this long count as outages.
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    @field_validator("base_url")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _coherent(self) -> CatalogEntry:
        refs = [r for r in (self.api_key_env, self.api_key_secret, self.api_key) if r]
        if len(refs) > 1:
            raise ValueError("give one of api_key_env, api_key_secret, api_key")
        if self.provider == "bedrock" and (self.base_url or refs):
            raise ValueError("bedrock uses the function's AWS role: base_url and keys do not apply")
        return self

    @property
    def url(self) -> str:
        return self.base_url or OPENAI_DEFAULT_BASE_URL

    def model_for(self, requested: str | None) -> str | None:
        return requested or self.default_model or (self.models[0] if self.models else None)

    def secret_id(self, stage: str) -> str | None:
        """The secret to read: a name relative to ymera/<stage>/llm/ gets the prefix; anything else must have it."""
        if not self.api_key_secret:
            return None
        prefix = secret_prefix(stage)
        ref = self.api_key_secret
        match = _ARN.match(ref)
        name = match.group("name") if match else ref
        if not match and not ref.startswith("ymera/"):
            return prefix + ref
        if not name.startswith(prefix):
            raise ConfigError(f"an endpoint's API key secret must be under {prefix} (the functions may read "
                              "only those)")
        return ref


class Catalog:
    def __init__(self, entries: Mapping[str, CatalogEntry]) -> None:
        self.entries = dict(entries)

    def get(self, alias: str) -> CatalogEntry | None:
        return self.entries.get(alias)

    @property
    def aliases(self) -> list[str]:
        return sorted(self.entries)

    @classmethod
    def from_settings(cls, settings: Settings, document: str | None = None) -> Catalog:
        """The catalog of YMERA_LLM_ENDPOINTS, overlaid by a Secrets Manager `document`, plus the implicit default."""
        entries = parse(settings.llm_endpoints, "YMERA_LLM_ENDPOINTS", allow_inline_keys=False)
        if document:
            entries.update(parse(document, "YMERA_LLM_ENDPOINTS_SECRET_ARN", allow_inline_keys=True))
        if DEFAULT_ALIAS not in entries and settings.llm_provider:
            entries[DEFAULT_ALIAS] = stage_entry(settings)
        for entry in entries.values():
            entry.secret_id(settings.stage)  # refuse a secret outside the readable prefix now, not per task
        return cls(entries)


def stage_entry(settings: Settings) -> CatalogEntry:
    extra = [m.strip() for m in settings.llm_allowed_models.split(",")]
    models = tuple(m for m in (settings.llm_model, *extra) if m)
    return CatalogEntry(provider=settings.llm_provider or "openai", base_url=settings.llm_base_url or None,
                        api_key=settings.llm_api_key or None, api_key_secret=settings.llm_api_key_secret_arn or None,
                        models=tuple(dict.fromkeys(models)), default_model=settings.llm_model or None,
                        max_tokens_per_task=settings.llm_max_tokens_per_task,
                        timeout_seconds=settings.llm_timeout_seconds)


def parse(raw: str, source: str, *, allow_inline_keys: bool) -> dict[str, CatalogEntry]:
    if not raw.strip():
        return {}
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{source} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a JSON object of alias -> endpoint")
    entries: dict[str, CatalogEntry] = {}
    for alias, value in data.items():
        if not isinstance(alias, str) or not re.match(NAME_PATTERN, alias):
            raise ConfigError(f"{source}: endpoint alias {alias!r} must match {NAME_PATTERN}")
        if isinstance(value, dict) and "api_key" in value and not allow_inline_keys:
            raise ConfigError(f"{source}: endpoint {alias!r} carries an inline api_key; use api_key_env or "
                              "api_key_secret (inline keys belong only in the Secrets Manager document)")
        try:
            entries[alias] = CatalogEntry.model_validate(value)
        except ValidationError as exc:
            # the message names fields only: the document may hold keys
            fields = sorted({".".join(str(p) for p in e["loc"]) or "(entry)" for e in exc.errors()})
            raise ConfigError(f"{source}: endpoint {alias!r} is invalid ({', '.join(fields)})") from None
    return entries
