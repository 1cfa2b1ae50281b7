"""CI's offline checks of the API deploy unit: `chalice package --merge-template` lints clean, IAM has no
wildcard action on a wildcard resource, and (when PyPI answers) every runtime pin has a Lambda wheel.

The template of the functions/ stack is linted in tests/integration/test_infra.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.api_policy import render
from infra.build import PLATFORMS, PYTHON_VERSION, pinned_names

ROOT = Path(__file__).resolve().parents[2]


def _cfn_lint() -> list[str]:
    script = Path(sys.executable).with_name("cfn-lint")  # cfn-lint 1.x has no `python -m cfnlint`
    return [str(script)] if script.exists() else [sys.executable, "-c",
                                                  "import sys; from cfnlint.runner import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def sam(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """`chalice package --stage dev --merge-template` of a copy of the API project, offline.

    The copy's requirements.txt is empty: chalice would otherwise download wheels from PyPI for the API's
    zip (the template does not depend on them; wheel availability is checked separately below)."""
    project = tmp_path_factory.mktemp("api")
    shutil.copy(ROOT / "app.py", project / "app.py")
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / ".chalice", project / ".chalice",
                    ignore=shutil.ignore_patterns("deployed", "deployments", "policy-*.json"))
    (project / "requirements.txt").write_text("")
    policy = project / ".chalice" / "policy-dev.json"
    policy.write_text(json.dumps(render("dev", "us-east-1", "123456789012")))
    merge = project / "gateway-responses.json"
    subprocess.run([sys.executable, "-m", "infra.gateway_responses", "--merge-template", str(merge)],
                   cwd=ROOT, check=True)
    out = project / "out"
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "HOME": str(project)}
    result = subprocess.run([str(Path(sys.executable).with_name("chalice")), "package", "--stage", "dev",
                             "--merge-template", str(merge), str(out)],
                            cwd=project, capture_output=True, text=True, env=env, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Could not install dependencies" not in result.stdout + result.stderr
    return json.loads((out / "sam.json").read_text()), out / "sam.json"


def test_chalice_package_merges_the_gateway_responses(sam: tuple[dict[str, Any], Path]) -> None:
    template, _ = sam
    responses = template["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == "404"
    env = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert env["YMERA_STAGE"] == "dev" and env["YMERA_JWT_SECRET_ARN"] == "ymera/dev/jwt"


def test_the_packaged_api_template_lints_clean(sam: tuple[dict[str, Any], Path]) -> None:
    _, path = sam
    result = subprocess.run([*_cfn_lint(), "--", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _statements(document: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(document, dict):
        if "Effect" in document and "Action" in document:
            found.append(document)
        for value in document.values():
            found += _statements(value)
    elif isinstance(document, list):
        for value in document:
            found += _statements(value)
    return found


TOKEN_ACTIONS = {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_allow_has_a_wildcard_action_on_a_wildcard_resource(sam: tuple[dict[str, Any], Path]) -> None:
    """The packaged API (its role carries the rendered policy) and the API policy with VPC access; the
    functions' template and the plain API policy are checked in tests/integration/test_infra.py."""
    template, _ = sam
    statements = _statements(template) + render("dev", "us-east-1", "123456789012", vpc=True)["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow" and "Principal" not in s]
    assert len(allows) >= 6
    for st in allows:
        actions, resources = _as_list(st["Action"]), _as_list(st.get("Resource", []))
        assert not any(a == "*" or a.endswith(":*") for a in actions), st
        if "*" in resources:
            # Named actions only, and only those AWS cannot scope to a resource: ENI management, log
            # delivery, and answering a task token (IAM has no resource for a token).
            assert all(a.startswith(("ec2:", "logs:")) or a in TOKEN_ACTIONS for a in actions), st
            assert not any("*" in a for a in actions), st


def test_the_vpc_statement_appears_only_in_a_vpc() -> None:
    plain = {st["Sid"] for st in render("dev", "us-east-1", "123456789012")["Statement"]}
    vpc = {st["Sid"] for st in render("dev", "us-east-1", "123456789012", vpc=True)["Statement"]}
    assert vpc - plain == {"ManageVpcNetworkInterfaces"}


def _pypi_reachable() -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=5):  # noqa: S310 - fixed URL
            return True
    except OSError:
        return False


@pytest.mark.parametrize("arch", sorted(PLATFORMS))
def test_every_runtime_pin_has_a_wheel_for_the_lambda_runtime(arch: str, tmp_path: Path) -> None:
    """What `make build` and chalice's packager both need; `pip download --no-deps` per pin, no install."""
    if not _pypi_reachable():
        pytest.skip("PyPI is unreachable: wheel availability needs the network")
    from concurrent.futures import ThreadPoolExecutor

    pins = [r for r in (line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())
            if r]

    def has_wheel(requirement: str) -> bool:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--platform", PLATFORMS[arch], "--python-version", PYTHON_VERSION, "--implementation", "cp",
             "--dest", str(tmp_path), requirement],
            capture_output=True, text=True, check=False, timeout=120)
        return result.returncode == 0

    with ThreadPoolExecutor(max_workers=8) as pool:
        missing = [pin for pin, ok in zip(pins, pool.map(has_wheel, pins), strict=True) if not ok]
    assert len(pinned_names(ROOT / "requirements.txt")) > 10
    assert missing == [], f"no {PLATFORMS[arch]} wheel for CPython {PYTHON_VERSION}: {missing}"


def test_the_packaged_api_has_the_websocket_api_and_its_three_routes(sam: tuple[dict[str, Any], Path]) -> None:
    """Chalice's WebSocket support packages a WebSocket API whose routes invoke app.py's ws_* handlers."""
    template, _ = sam
    resources = template["Resources"]
    assert resources["WebsocketAPI"]["Properties"]["ProtocolType"] == "WEBSOCKET"
    handlers = {name: r["Properties"]["Handler"] for name, r in resources.items()
                if r["Type"] == "AWS::Serverless::Function" and name.startswith("Websocket")}
    assert sorted(handlers.values()) == ["app.ws_connect", "app.ws_disconnect", "app.ws_message"]
    routes = {r["Properties"]["RouteKey"] for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Route"}
    assert routes == {"$connect", "$default", "$disconnect"}
    assert "WebsocketConnectEndpointURL" in template["Outputs"]
