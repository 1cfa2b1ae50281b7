"""YMERA_FUNCTION_TIMEOUT_SECONDS: chalicelib may not import infra, so the default is a copy — checked here."""

from __future__ import annotations

from chalicelib.config import Settings
from chalicelib.providers.registry import wall_cap_seconds
from infra import manifest


def test_the_default_function_timeout_is_the_provider_consumers_timeout_in_the_manifest() -> None:
    default = Settings.model_fields["function_timeout_seconds"].default
    assert default == manifest.PROVIDER_CONSUMER_TIMEOUT_SECONDS
    assert {manifest.consumer_timeout(t) for t in manifest.PROVIDER_BACKED} == {default}


def test_every_provider_backed_task_budget_ends_before_its_function_does() -> None:
    for agent_type in manifest.PROVIDER_BACKED:
        timeout = manifest.consumer_timeout(agent_type)
        assert wall_cap_seconds(timeout) <= timeout - 10
