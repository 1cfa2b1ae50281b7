"""Secrets from the environment, or from AWS Secrets Manager: the JWT signing key and the data-store URLs.

With `YMERA_JWT_SECRET_ARN` (`YMERA_DATABASE_URL_SECRET_ARN`, `YMERA_REDIS_URL_SECRET_ARN`) set, the value
is fetched once per container (the Container caches what it builds from it) through boto3, which honours
`AWS_ENDPOINT_URL`, so LocalStack and moto work unchanged. A secret string may be the value itself or a JSON
object with a named field (the shape the console's key/value editor produces); the database URL may also be
an RDS-managed secret ({username, password, host, port, dbname}), which gets sslmode=require.

Errors name the setting and the exception type, never the ARN or the value.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from chalicelib.config import MIN_SECRET_BYTES, ConfigError, Settings, check_data_store_tls

SECRET_FIELD = "jwt_secret"
URL_FIELD = "url"


def read_secret_string(settings: Settings, arn: str, what: str, client: Any = None) -> str:
    """The SecretString of `arn`; ConfigError (naming `what`) when it cannot be read."""
    # Only deployments that use Secrets Manager pay for these imports.
    from botocore.exceptions import BotoCoreError, ClientError

    if client is None:
        import boto3

        client = boto3.client("secretsmanager", region_name=settings.aws_region,
                              endpoint_url=settings.aws_endpoint_url)
    try:
        raw = client.get_secret_value(SecretId=arn).get("SecretString")
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"cannot read the {what} from Secrets Manager ({type(exc).__name__})") from exc
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"the {what} in Secrets Manager has no SecretString")
    return raw


def load_jwt_secret(settings: Settings, client: Any = None) -> str:
    """Return the signing secret, refusing one shorter than 32 bytes when it comes from Secrets Manager."""
    settings.require_token_secret()
    if not settings.jwt_secret_arn:
        return settings.jwt_secret
    secret = _field(read_secret_string(settings, settings.jwt_secret_arn, "JWT secret", client), SECRET_FIELD,
                    "JWT secret")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"the JWT secret in Secrets Manager must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def load_database_url(settings: Settings, client: Any = None) -> str:
    if not settings.database_url_secret_arn:
        return settings.database_url
    raw = read_secret_string(settings, settings.database_url_secret_arn, "database URL", client)
    data = _json(raw, "database URL")
    if isinstance(data, dict) and URL_FIELD not in data and {"username", "password", "host"} <= data.keys():
        url = (f"postgresql+psycopg://{quote(str(data['username']), safe='')}:{quote(str(data['password']), safe='')}"
               f"@{data['host']}:{data.get('port', 5432)}/{quote(str(data.get('dbname', 'postgres')), safe='')}"
               "?sslmode=require")
    else:
        url = _field(raw, URL_FIELD, "database URL")
    return _checked(settings, url, "the database URL in Secrets Manager")


def load_redis_url(settings: Settings, client: Any = None) -> str:
    if not settings.redis_url_secret_arn:
        return settings.redis_url
    url = _field(read_secret_string(settings, settings.redis_url_secret_arn, "Redis URL", client), URL_FIELD,
                 "Redis URL")
    return _checked(settings, url, "the Redis URL in Secrets Manager")


def _checked(settings: Settings, url: str, what: str) -> str:
    if not settings.is_development:
        try:
            check_data_store_tls(url, what)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    return url


def _json(raw: str, what: str) -> Any:
    if not raw.lstrip().startswith("{"):
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the {what} in Secrets Manager is not valid JSON") from exc


def _field(raw: str, field: str, what: str) -> str:
    data = _json(raw, what)
    if data is None:
        return raw
    value = data.get(field) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"the {what} JSON has no string field {field!r}")
    return value
