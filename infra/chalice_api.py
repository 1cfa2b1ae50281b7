"""`chalice deploy` / `chalice delete` of the API, with the stack's outputs in its environment.

Chalice's `Config` merges `user_provided_params["environment_variables"]` over the stage's
`environment_variables` from `.chalice/config.json` (chalice.config.Config._chain_merge, the same lookup
that gives CLI flags precedence), so the deploy passes the outputs and secret ARNs that way instead of
rewriting the committed config.json with one account's ARNs. This is `chalice deploy --stage S` (the
CLI's own code path: CLIFactory -> create_default_deployer) plus that one parameter; chalice is pinned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def chalice_config(stage: str, env: Mapping[str, str], *, project_dir: Path = ROOT,
                   subnet_ids: Sequence[str] = (), security_group_ids: Sequence[str] = ()) -> Any:
    """The chalice Config `chalice deploy --stage` would use, with `env` over the stage's variables."""
    from chalice.cli.factory import CLIFactory

    params: dict[str, Any] = {"environment_variables": dict(env)}
    if subnet_ids and security_group_ids:  # the API reaches a database in the VPC like the functions do
        params["subnet_ids"] = list(subnet_ids)
        params["security_group_ids"] = list(security_group_ids)
    return CLIFactory(project_dir=str(project_dir)).create_config_obj(chalice_stage_name=stage,
                                                                      user_provided_params=params)


def deploy(stage: str, env: Mapping[str, str], *, project_dir: Path = ROOT, subnet_ids: Sequence[str] = (),
           security_group_ids: Sequence[str] = ()) -> dict[str, str]:
    """Deploy the API; returns {"rest_api_id", "rest_api_url", "websocket_api_url"?}."""
    from chalice.cli.factory import CLIFactory
    from chalice.utils import UI

    factory = CLIFactory(project_dir=str(project_dir))
    config = chalice_config(stage, env, project_dir=project_dir, subnet_ids=subnet_ids,
                            security_group_ids=security_group_ids)
    session = factory.create_botocore_session()
    deployer = factory.create_default_deployer(session=session, config=config, ui=UI())
    deployed = deployer.deploy(config, chalice_stage_name=stage)
    return deployed_urls(deployed)


def deployed_urls(deployed: Mapping[str, Any]) -> dict[str, str]:
    """The REST API id/URL (and the WebSocket URL, if the app has one) from chalice's deployed values."""
    out: dict[str, str] = {}
    for resource in deployed.get("resources", []):
        if resource.get("resource_type") == "rest_api":
            out["rest_api_id"] = str(resource["rest_api_id"])
            out["rest_api_url"] = str(resource["rest_api_url"])
        elif resource.get("resource_type") == "websocket_api":
            out["websocket_api_url"] = str(resource["websocket_api_url"])
    return out


def delete(stage: str, *, project_dir: Path = ROOT) -> bool:
    """`chalice delete --stage`; False when chalice has no record of a deployment of this stage."""
    from chalice.cli.factory import CLIFactory
    from chalice.utils import UI

    if not (project_dir / ".chalice" / "deployed" / f"{stage}.json").exists():
        return False
    factory = CLIFactory(project_dir=str(project_dir))
    config = factory.create_config_obj(chalice_stage_name=stage)
    factory.create_deletion_deployer(session=factory.create_botocore_session(), ui=UI()).deploy(
        config, chalice_stage_name=stage)
    return True
