"""Where the operator's API keys come from: an environment variable or AWS Secrets Manager.

Secrets are fetched once and kept for `ttl` seconds per container, so a rotated key is picked up
without a redeploy and a warm function does not call Secrets Manager per task. A secret's string
may be the key itself or JSON with an `api_key` field (the console's key/value editor).

Every way a key can be missing — an unset variable, a secret that does not exist, one the role may
not read, one without a key in it — gives the user the same PROVIDER_NOT_CONFIGURED error with no
names, ARNs or account ids in it (no existence oracle); the operator finds the reason in the log.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.observability import logger
from chalicelib.providers.errors import ProviderNotConfiguredError, ProviderUnavailableError

SECRET_FIELD = "api_key"
UNAVAILABLE_KEY = "the API key for this endpoint is not available"


def key_unavailable(endpoint: str) -> ProviderNotConfiguredError:
    """The one answer for every missing key (operator's or user's)."""
    return ProviderNotConfiguredError(f"{UNAVAILABLE_KEY} ({endpoint}); ask the operator, or check config.key",
                                      {"endpoint": endpoint})


class KeyResolver:
    def __init__(self, client_factory: Callable[[], Any], environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, ttl: float = 300.0) -> None:
        self._client_factory = client_factory
        self._environ = os.environ if environ is None else environ
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def from_env(self, name: str, endpoint: str) -> str:
        value = self._environ.get(name, "")
        if not value:
            logger.error("provider key variable is not set", extra={"variable": name, "endpoint": endpoint})
            raise key_unavailable(endpoint)
        return value

    def from_secret(self, secret_id: str, endpoint: str) -> str:
        value = _extract(self.secret_string(secret_id, endpoint))
        if value is None:
            logger.error("provider key secret holds no key", extra={"secret": secret_id, "endpoint": endpoint})
            raise key_unavailable(endpoint)
        return value

    def secret_string(self, secret_id: str, endpoint: str) -> str:
        """A secret's string, cached for `ttl`."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(secret_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        value = self._fetch(secret_id, endpoint)
        with self._lock:
            self._cache[secret_id] = (now, value)
        return value

    def _fetch(self, secret_id: str, endpoint: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            raw = self._client_factory().get_secret_value(SecretId=secret_id).get("SecretString")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            logger.error("cannot read provider secret", extra={"secret": secret_id, "aws_error": code,
                                                                "endpoint": endpoint})
            if code in ("ThrottlingException", "InternalServiceError"):
                raise ProviderUnavailableError("Secrets Manager is unavailable", {"endpoint": endpoint}) from None
            raise key_unavailable(endpoint) from None
        except BotoCoreError as exc:
            logger.error("cannot reach Secrets Manager", extra={"error": type(exc).__name__, "endpoint": endpoint})
            raise ProviderUnavailableError("Secrets Manager is unavailable", {"endpoint": endpoint}) from None
        if not isinstance(raw, str):
            logger.error("provider secret has no string value", extra={"secret": secret_id, "endpoint": endpoint})
            raise key_unavailable(endpoint)
        return raw


def _extract(raw: str) -> str | None:
    if raw.lstrip().startswith("{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            data = None
        value = data.get(SECRET_FIELD) if isinstance(data, dict) else None
        return value.strip() if isinstance(value, str) and value.strip() else None
    return raw.strip() or None
