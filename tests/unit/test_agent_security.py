"""The `security` agent on code and text: located, redacted secret findings and bandit's insecure patterns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest

from chalicelib.agents.base import AgentOutput
from chalicelib.agents.registry import get_agent, validate_input
from chalicelib.agents.security import SecurityAgent, SecurityInput
from chalicelib.errors import AgentError, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[2]

# The secrets below are made up, shaped like the real thing. Line numbers matter: keep the text as it is.
AWS_KEY_ID = "AKIAZ7VRSQ4TLMPQX2WD"
KEY_BODY = ("MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
            "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK")
DEPLOY = f'''\
import subprocess

AWS_ACCESS_KEY_ID = "{AWS_KEY_ID}"
SIGNING_KEY = """-----BEGIN RSA PRIVATE KEY-----
{KEY_BODY[0]}
{KEY_BODY[1]}
-----END RSA PRIVATE KEY-----"""


def deploy(target, hook):
    subprocess.call("rsync -a build/ " + target, shell=True)
    return eval(hook)
'''


def scan(content: str, config: dict[str, Any] | None = None, **fields: Any) -> AgentOutput:
    agent = get_agent("security")
    return agent.run(SecurityInput.model_validate({"content": content, **fields}), config or {})


def located(output: dict[str, Any]) -> list[tuple[str, str, int, int, str]]:
    return [(f["rule"], f["severity"], f["line"], f["column"], f["scanner"]) for f in output["findings"]]


def test_registry_returns_the_security_agent_with_defaults() -> None:
    agent = get_agent("security")
    assert isinstance(agent, SecurityAgent)
    assert agent.Input is SecurityInput
    assert agent.Config().model_dump()["thresholds"] == {
        "failed_logins_per_account": 10, "failed_logins_per_ip": 20, "refresh_reuse": 1}


def test_python_snippet_yields_secrets_and_insecure_patterns_in_file_order() -> None:
    result = scan(DEPLOY, filename="deploy.py")

    assert located(result.output) == [
        ("B404", "low", 1, 1, "bandit"),  # import subprocess
        ("aws-access-key-id", "critical", 3, 22, "secrets"),
        ("private-key", "critical", 4, 18, "secrets"),
        ("B602", "high", 11, 5, "bandit"),  # subprocess.call(..., shell=True)
        ("B307", "medium", 12, 12, "bandit"),  # eval(
    ]
    by_rule = {f["rule"]: f for f in result.output["findings"]}
    assert by_rule["B602"]["cwe"] == "CWE-78" and by_rule["B602"]["confidence"] == "high"
    assert by_rule["B602"]["snippet"] == 'subprocess.call("rsync -a build/ " + target, shell=True)'
    assert "shell=True" in by_rule["B602"]["remediation"]
    assert "literal_eval" in by_rule["B307"]["remediation"]
    assert by_rule["private-key"]["snippet"] == (
        "-----BEGIN RSA PRIVATE KEY----- [2 lines redacted] -----END RSA PRIVATE KEY-----")
    assert by_rule["aws-access-key-id"]["snippet"] == 'AWS_ACCESS_KEY_ID = "AKIA****WD"'
    assert result.output["summary"] == {"by_severity": {"critical": 2, "high": 1, "medium": 1, "low": 1}, "total": 5}
    assert result.output["scanners_used"] == ["secrets", "bandit"]
    assert result.output["language"] == "python"
    assert result.metrics["lines_scanned"] == 12
    assert result.metrics["duration_ms"] > 0


def test_no_secret_value_appears_anywhere_in_the_output() -> None:
    token = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
    source = DEPLOY + f'\nimport os\nos.system("curl -H \'Authorization: token {token}\' https://api.github.com")\n'

    result = scan(source, filename="deploy.py")

    text = json.dumps(result.output)
    for secret in (AWS_KEY_ID, *KEY_BODY, token, token[4:-2]):
        assert secret not in text
    # bandit's own snippet of that line is scrubbed of the token too.
    b605 = next(f for f in result.output["findings"] if f["rule"] == "B605")
    assert b605["snippet"] == "os.system(\"curl -H 'Authorization: token ghp_****A5' https://api.github.com\")"


@pytest.mark.parametrize(
    ("line", "rule", "severity", "column"),
    [
        ('aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8xR2tLmN"', "aws-secret-access-key", "critical", 26),
        ('ASIA = "ASIAQ4ZLMPTX7RVS2WDK"', "aws-access-key-id", "critical", 9),
        ('example = "AKIAIOSFODNN7EXAMPLE"', "aws-access-key-id", "low", 12),
        ('GH = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"', "github-token", "high", 7),
        ('SLACK = "xoxb-2048917331-4096183552-Zq8Rk2Lm9Vx"', "slack-token", "high", 10),
        ('stripe.api_key = "sk_live_51HxQ2kLmN8pR4tV6wY8zB0c"', "stripe-live-key", "critical", 19),
        ('stripe.api_key = "sk_test_51HxQ2kLmN8pR4tV6wY8zB0c"', "stripe-test-key", "low", 19),
        ('auth = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"',
         "jwt", "medium", 9),
        ('connect(host="db", password="Tr0ub4dor&3")', "password-assignment", "high", 30),
        ('db_password: str = "s3cr3t-Passw0rd"', "password-assignment", "high", 21),
        ('settings = {"client_secret": "q8Zr4Tn2Lx9Vw1Ks7Pd3"}', "secret-assignment", "high", 31),
        ('blob = "q8Zr4Tn2Lx9Vw1Ks7Pd3Hm6Yb0Jf5Gc"', "high-entropy-string", "medium", 9),
        ('signing_key = "4f9c2e8a1b7d3f6e0a5c9b2d8e1f4a7c"', "secret-assignment", "high", 16),
    ],
)
def test_each_secret_rule(line: str, rule: str, severity: str, column: int) -> None:
    output = scan(line + "\n", language="other").output

    assert located(output) == [(rule, severity, 1, column, "secrets")]
    (finding,) = output["findings"]
    assert finding["cwe"] == "CWE-798" and finding["remediation"]


@pytest.mark.parametrize(
    "line",
    [
        'request_id = "550e8400-e29b-41d4-a716-446655440000"',  # a UUID
        'sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',  # a digest, said so
        'commit = "e83c5163316f89bfbde7d9ab23ca2e25604af290"',
        'checksum = "d41d8cd98f00b204e9800998ecf8427e"',
        'handler = "ApiGatewayV2ResponseHandler"',  # an identifier
        'ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"',
        'SCHEMA = "http://www.w3.org/2001/XMLSchema-instance"',  # a link
        'password = os.environ["DB_PASSWORD"]',  # read, not hard-coded
        'password = "${DB_PASSWORD}"',  # a placeholder
        'FORCE_CHANGE_PASSWORD = "FORCE_CHANGE_PASSWORD"',  # a constant naming itself
        'token = "Bearer"',  # too short and plain to be a credential
    ],
)
def test_non_secrets_are_not_reported(line: str) -> None:
    assert scan(line + "\n", language="other").output["findings"] == []


def test_text_mode_reads_env_style_assignments_that_code_mode_leaves_alone() -> None:
    env = "# staging\nDB_HOST=db.internal\nDB_PASSWORD=Tr0ub4dor&3\nAPI_TOKEN=${TOKEN}\n"

    text = scan(env, mode="text").output
    code = scan(env, language="shell").output

    assert located(text) == [("password-assignment", "high", 3, 13, "secrets")]
    assert text["findings"][0]["snippet"] == "DB_PASSWORD=Tr****"
    assert text["scanners_used"] == ["secrets"] and "language" not in text
    # In code, `password = value` assigns a variable; only quoted literals are hard-coded.
    assert code["findings"] == []


def test_bandit_runs_only_on_python() -> None:
    js = "const cmd = require('child_process');\ncmd.exec(userInput);\n"

    assert scan(js, filename="run.js").output["scanners_used"] == ["secrets"]
    assert scan(js).output["language"] is None  # does not parse as Python
    inferred = scan("import pickle\npickle.loads(blob)\n").output
    assert inferred["language"] == "python"
    assert [f["rule"] for f in inferred["findings"]] == ["B403", "B301"]


def test_bandit_can_be_switched_off_in_the_config() -> None:
    output = scan(DEPLOY, {"bandit": False}, filename="deploy.py").output

    assert output["scanners_used"] == ["secrets"]
    assert [f["rule"] for f in output["findings"]] == ["aws-access-key-id", "private-key"]


def test_unparsable_python_still_gets_its_secrets_and_says_bandit_skipped_it() -> None:
    source = f'KEY = "{AWS_KEY_ID}"\ndef broken(:\n'

    output = scan(source, language="python").output

    assert located(output) == [("aws-access-key-id", "critical", 1, 8, "secrets")]
    (skipped,) = output["skipped"]
    assert skipped["scanner"] == "bandit" and "syntax error" in skipped["reason"]


def test_entropy_limits_come_from_the_config() -> None:
    line = 'blob = "q8Zr4Tn2Lx9Vw1Ks7Pd3Hm6Yb0Jf5Gc"\n'

    assert scan(line, {"min_entropy_length": 40}, language="other").output["findings"] == []


def test_bandit_missing_from_the_runtime_fails_the_task_instead_of_a_partial_report(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("bandit", "bandit.core", "bandit.core.config", "bandit.core.manager", "bandit.core.docs_utils"):
        monkeypatch.setitem(sys.modules, module, None)  # what an interpreter without bandit does on import

    with pytest.raises(AgentError) as caught:
        scan(DEPLOY, filename="deploy.py")

    assert caught.value.code == "SCANNER_UNAVAILABLE"
    assert caught.value.details["scanner"] == "bandit"


def test_audit_log_mode_needs_the_platform_context() -> None:
    agent = get_agent("security")

    with pytest.raises(AgentError, match="audit log"):
        agent.run(SecurityInput.model_validate({"mode": "audit_log"}), {})


@pytest.mark.parametrize(
    ("input_data", "loc", "error_type"),
    [
        ({"mode": "text"}, ("content",), "missing"),
        ({}, ("content",), "missing"),
        ({"mode": "audit_log", "content": "x"}, ("content",), "extra_forbidden"),
        ({"mode": "code", "content": "x", "window_minutes": 5}, ("window_minutes",), "extra_forbidden"),
        ({"mode": "binary", "content": "x"}, ("mode",), "invalid_mode"),
        ({"content": ""}, ("content",), "string_too_short"),
        ({"content": "GIF89a\x00\x01"}, ("content",), "value_error"),
        ({"content": "x", "language": "cobol"}, ("language",), "literal_error"),
        ({"mode": "audit_log", "window_minutes": 0}, ("window_minutes",), "greater_than_equal"),
        ({"mode": "audit_log", "thresholds": {"failed_logins": 3}}, ("thresholds", "failed_logins"), "extra_forbidden"),
    ],
)
def test_input_model_enforces_each_modes_fields(input_data: dict[str, Any], loc: tuple[str, ...],
                                                error_type: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        SecurityInput.model_validate(input_data)

    assert [(err["loc"], err["type"]) for err in caught.value.errors()] == [(loc, error_type)]


def test_validate_input_normalises_the_mode_and_locates_errors_under_input_data() -> None:
    assert validate_input("security", {"content": "x"}) == {
        "mode": "code", "content": "x", "language": None, "filename": None}

    with pytest.raises(ValidationError) as caught:
        validate_input("security", {"mode": "text", "language": "python"})

    assert sorted(err["loc"] for err in caught.value.details["errors"]) == [
        ["input_data", "content"], ["input_data", "language"]]


def test_config_is_validated() -> None:
    with pytest.raises(pydantic.ValidationError):
        SecurityAgent.Config.model_validate({"thresholds": {"failed_logins_per_account": 0}})
    with pytest.raises(pydantic.ValidationError):
        SecurityAgent.Config.model_validate({"entropy": 4})


def test_example_input_is_valid_and_finds_what_it_shows() -> None:
    agent = get_agent("security")
    output = agent.run(SecurityInput.model_validate(agent.example_input), {}).output

    assert {f["rule"] for f in output["findings"]} == {"B404", "aws-access-key-id", "B602"}


def test_scanners_are_not_imported_with_the_module() -> None:
    code = "import sys, chalicelib.agents.security; print('bandit' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
