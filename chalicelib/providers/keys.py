"""Where API keys come from: an environment variable or AWS Secrets Manager.

Secrets are fetched once and kept for `ttl` seconds per container, so a
rotated key is picked up without a redeploy and a warm function does not call
Secrets Manager per task. A secret's string may be the key itself or JSON
with an `api_key` field (the console's key/value editor).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.providers.errors import ProviderNotConfiguredError, ProviderUnavailableError

SECRET_FIELD = "api_key"


class KeyResolver:
    def __init__(self, client_factory: Callable[[], Any], environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, ttl: float = 300.0) -> None:
        self._client_factory = client_factory
        self._environ = os.environ if environ is None else environ
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def from_env(self, name: str, configured_by: str) -> str:
        value = self._environ.get(name, "")
        if not value:
            raise ProviderNotConfiguredError(
                f"{configured_by} names the environment variable {name}, which is not set: set {name} on the "
                "agent functions", {"missing": [name]})
        return value

    def from_secret(self, arn: str, configured_by: str) -> str:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(arn)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        value = _extract(self._fetch(arn, configured_by), arn, configured_by)
        with self._lock:
            self._cache[arn] = (now, value)
        return value

    def _fetch(self, arn: str, configured_by: str) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client_factory().get_secret_value(SecretId=arn).get("SecretString")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ThrottlingException", "InternalServiceError"):
                raise ProviderUnavailableError(f"Secrets Manager is unavailable ({code})", {"secret": arn}) from exc
            raise ProviderNotConfiguredError(
                f"cannot read the API key secret named by {configured_by} ({code}): create it, or let the "
                "function's role read it", {"secret": arn, "aws_error": code}) from exc
        except BotoCoreError as exc:
            raise ProviderUnavailableError(f"cannot reach Secrets Manager ({type(exc).__name__})",
                                           {"secret": arn}) from exc


def _extract(raw: Any, arn: str, configured_by: str) -> str:
    if isinstance(raw, str) and raw.lstrip().startswith("{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            data = None
        raw = data.get(SECRET_FIELD) if isinstance(data, dict) else None
    if not isinstance(raw, str) or not raw.strip():
        raise ProviderNotConfiguredError(
            f"the secret named by {configured_by} holds no API key (a string, or JSON with {SECRET_FIELD!r})",
            {"secret": arn})
    return raw.strip()
