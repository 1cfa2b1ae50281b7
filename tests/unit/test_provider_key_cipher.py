"""The cipher for users' provider keys: bound to owner and name, and no silent key outside development."""

from __future__ import annotations

import base64
import os
import uuid

import pytest

from chalicelib.config import ConfigError
from chalicelib.providers.user_keys import KeyCipher
from tests.llm_server import llm_settings

OWNER = uuid.uuid4()


def test_a_key_decrypts_only_for_its_owner_and_name() -> None:
    cipher = KeyCipher(os.urandom(32))
    blob = cipher.encrypt("sk-abc", OWNER, "mine")
    assert b"sk-abc" not in blob and cipher.decrypt(blob, OWNER, "mine") == "sk-abc"
    assert cipher.decrypt(blob, uuid.uuid4(), "mine") is None  # a row copied to another user
    assert cipher.decrypt(blob, OWNER, "other") is None  # or renamed
    assert KeyCipher(os.urandom(32)).decrypt(blob, OWNER, "mine") is None  # another encryption key
    assert cipher.encrypt("sk-abc", OWNER, "mine") != blob  # a fresh nonce each time


def test_outside_development_a_missing_encryption_key_is_refused() -> None:
    with pytest.raises(ConfigError):
        KeyCipher.from_settings(llm_settings(stage="production", jwt_secret="x" * 40))
    key = base64.b64encode(os.urandom(32)).decode()
    KeyCipher.from_settings(llm_settings(stage="production", jwt_secret="x" * 40, provider_key_encryption_key=key))


def test_development_derives_a_stable_key_from_the_jwt_secret() -> None:
    settings = llm_settings(stage="development", jwt_secret="d" * 40, provider_key_encryption_key="")
    blob = KeyCipher.from_settings(settings).encrypt("sk", OWNER, "n")
    assert KeyCipher.from_settings(settings).decrypt(blob, OWNER, "n") == "sk"


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_encryption_key_fails_settings(bad: str) -> None:
    with pytest.raises(ValueError):
        llm_settings(provider_key_encryption_key=bad)


def test_the_encryption_key_can_come_from_secrets_manager() -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        raw = os.urandom(32)
        arn = client.create_secret(Name="ymera/prod/llm/provider-key-encryption",
                                   SecretString=base64.b64encode(raw).decode())["ARN"]
        settings = llm_settings(stage="production", jwt_secret="x" * 40, provider_key_encryption_key_secret_arn=arn)
        blob = KeyCipher.from_settings(settings, client).encrypt("sk", OWNER, "n")
        assert KeyCipher(raw).decrypt(blob, OWNER, "n") == "sk"
        client.put_secret_value(SecretId=arn, SecretString="not base64!")
        with pytest.raises(ConfigError):
            KeyCipher.from_settings(settings, client)
