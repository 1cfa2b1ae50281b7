"""Where the JWT signing secret comes from: the environment, or AWS Secrets Manager.

With `YMERA_JWT_SECRET_ARN` set, the secret is fetched once per container
(the Container caches the result) through boto3, which honours
`AWS_ENDPOINT_URL`, so LocalStack and moto work unchanged. The secret string
may be the key itself or a JSON object with a `jwt_secret` field (the shape
the console's key/value editor produces).
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib.config import MIN_SECRET_BYTES, ConfigError, Settings

SECRET_FIELD = "jwt_secret"


def load_jwt_secret(settings: Settings, client: Any = None) -> str:
    """Return the signing secret, refusing one shorter than 32 bytes when it comes from Secrets Manager."""
    settings.require_token_secret()
    if not settings.jwt_secret_arn:
        return settings.jwt_secret
    # Only deployments that use Secrets Manager pay for these imports.
    from botocore.exceptions import BotoCoreError, ClientError

    if client is None:
        import boto3

        client = boto3.client("secretsmanager", region_name=settings.aws_region,
                              endpoint_url=settings.aws_endpoint_url)
    try:
        raw = client.get_secret_value(SecretId=settings.jwt_secret_arn).get("SecretString")
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"cannot read the JWT secret from Secrets Manager ({type(exc).__name__})") from exc
    secret = _extract(raw)
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"the JWT secret in Secrets Manager must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def _extract(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise ConfigError("the JWT secret in Secrets Manager has no SecretString")
    if raw.lstrip().startswith("{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError("the JWT secret in Secrets Manager is not valid JSON") from exc
        value = data.get(SECRET_FIELD) if isinstance(data, dict) else None
        if not isinstance(value, str):
            raise ConfigError(f"the JWT secret JSON has no string field {SECRET_FIELD!r}")
        return value
    return raw
