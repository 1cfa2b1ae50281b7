"""The stage's secrets in Secrets Manager (`ymera/<stage>/...`): created when missing, never printed.

Generated ones (the JWT key, the provider-key encryption key) are made once and then left alone: re-running
the deploy must not log everybody out or orphan the stored provider keys. The data-store URLs come from the
deploying environment (DATABASE_URL, REDIS_URL) the first time, or whenever they are given again (that is how
to change one). Nothing here formats a secret value into a message.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

APP = "ymera"


@dataclass(frozen=True)
class StageSecret:
    name: str  # under ymera/<stage>/
    setting: str  # the env var that names it for the API and the functions
    #: makes a value when the secret is missing (generated secrets), or None: it must be given
    generate: Callable[[], str] | None = None
    #: the deploying environment's variable that supplies (or replaces) the value
    source_env: str | None = None
    #: how the source value is stored (chalicelib.auth.secrets reads {"url": ...})
    wrap: Callable[[str], str] = str


def _jwt_key() -> str:
    return secrets.token_urlsafe(64)  # 64 random bytes; plain text, the API signs with it as given


def _aes_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()  # AES-256-GCM (chalicelib.providers.user_keys)


def _url(value: str) -> str:
    return json.dumps({"url": value})


SECRETS: tuple[StageSecret, ...] = (
    StageSecret("jwt", "YMERA_JWT_SECRET_ARN", generate=_jwt_key),
    StageSecret("database", "YMERA_DATABASE_URL_SECRET_ARN", source_env="DATABASE_URL", wrap=_url),
    StageSecret("redis", "YMERA_REDIS_URL_SECRET_ARN", source_env="REDIS_URL", wrap=_url),
    StageSecret("provider-key-encryption", "YMERA_PROVIDER_KEY_ENCRYPTION_KEY_SECRET_ARN", generate=_aes_key),
)


class MissingSecretError(RuntimeError):
    """A required secret does not exist and the deploying environment did not supply it."""


def secret_id(stage: str, name: str) -> str:
    return f"{APP}/{stage}/{name}"


def _arn_if_exists(sm: Any, sid: str) -> str | None:
    try:
        described = sm.describe_secret(SecretId=sid)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise
    if described.get("DeletedDate"):  # scheduled for deletion: restore rather than fail on create
        sm.restore_secret(SecretId=sid)
    return str(described["ARN"])


def ensure_secrets(sm: Any, stage: str, environ: Mapping[str, str], *,
                   out: Callable[[str], None] = print) -> dict[str, str]:
    """Create what is missing; returns {setting: secret ARN}. Raises MissingSecretError naming the env var."""
    missing = [s for s in SECRETS if s.generate is None and s.source_env and not environ.get(s.source_env)
               and _arn_if_exists(sm, secret_id(stage, s.name)) is None]
    if missing:
        names = ", ".join(f"{s.source_env} (for {secret_id(stage, s.name)})" for s in missing)
        raise MissingSecretError(f"set {names} for the first deploy of stage {stage!r}; later deploys reuse "
                                 "the stored secret (see docs/deploy.md)")
    arns: dict[str, str] = {}
    for spec in SECRETS:
        sid = secret_id(stage, spec.name)
        arn = _arn_if_exists(sm, sid)
        given = environ.get(spec.source_env, "") if spec.source_env else ""
        if arn is None:
            value = spec.wrap(given) if given else (spec.generate() if spec.generate else "")
            arn = str(sm.create_secret(Name=sid, SecretString=value,
                                       Description=f"YMERA {stage}: {spec.name} (created by make deploy)")["ARN"])
            out(f"  secret {sid}: created" + ("" if given else " (generated)"))
        elif given:
            sm.put_secret_value(SecretId=sid, SecretString=spec.wrap(given))
            out(f"  secret {sid}: updated from ${spec.source_env}")
        else:
            out(f"  secret {sid}: kept")
        arns[spec.setting] = arn
    return arns


def delete_secrets(sm: Any, stage: str, *, out: Callable[[str], None] = print) -> None:
    """Schedule deletion (Secrets Manager's 7-day minimum window: a mistaken destroy can be restored)."""
    for spec in SECRETS:
        sid = secret_id(stage, spec.name)
        if _arn_if_exists(sm, sid) is not None:
            sm.delete_secret(SecretId=sid, RecoveryWindowInDays=7)
            out(f"  secret {sid}: deletion scheduled (7 days; restore-secret undoes it)")
