"""The `security` agent: hard-coded secrets and insecure code patterns, or suspicious audit-log activity.

Modes (the input's `mode`, `code` when absent):
- `code`: source code -> secrets (chalicelib/agents/secrets_scan.py) and, for Python, bandit's insecure
  patterns (chalicelib/agents/bandit_scan.py).
- `text`: any text (config files, .env, logs, tickets) -> secrets; `KEY=value` lines count as assignments.
- `audit_log`: the audit trail over a time window -> brute force per account or address, refresh-token reuse
  (chalicelib/agents/audit_scan.py). A user scans the rows about their own account; an admin scans everyone's.

Every finding: rule, severity (low|medium|high|critical), line, column, snippet, message, remediation, scanner.
A secret never appears in the output: snippets and messages carry only a short prefix/suffix of it.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

from chalicelib.agents.base import Agent, AgentContext, AgentOutput
from chalicelib.agents.input_limits import line_schema, lines_within
from chalicelib.agents.modes import ModeInput
from chalicelib.errors import AgentError

SEVERITY_ORDER = ("critical", "high", "medium", "low")
Language = Literal["python", "javascript", "typescript", "go", "java", "ruby", "php", "csharp", "shell", "yaml",
                   "json", "terraform", "dockerfile", "other"]
MAX_CONTENT = 500_000


def _no_nul(value: str) -> str:
    # A NUL byte means binary content (an image, an archive): line-based scanning would report noise.
    if "\x00" in value:
        raise ValueError("content contains NUL bytes: binary content is not scanned")
    return value


Content = Annotated[str, Field(min_length=1, max_length=MAX_CONTENT, json_schema_extra=line_schema()),
                    lines_within(), AfterValidator(_no_nul)]


class CodeScan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["code"] = "code"
    content: Content = Field(description="Source code to scan.")
    language: Language | None = Field(
        default=None, description="Source language; inferred from the filename (or a Python parse) when absent.")
    filename: str | None = Field(default=None, min_length=1, max_length=255)


class TextScan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["text"]
    content: Content = Field(description="Text or configuration to scan.")
    filename: str | None = Field(default=None, min_length=1, max_length=255)


class ThresholdOverrides(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failed_logins_per_account: int | None = Field(default=None, ge=1, le=100_000)
    failed_logins_per_ip: int | None = Field(default=None, ge=1, le=100_000)
    refresh_reuse: int | None = Field(default=None, ge=1, le=100_000)


class AuditLogScan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["audit_log"]
    window_minutes: int | None = Field(default=None, ge=1, le=30 * 24 * 60,
                                       description="How far back from now to look (the agent's config by default).")
    thresholds: ThresholdOverrides | None = Field(default=None, description="Overrides of the agent's thresholds.")


def _pick_mode(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("mode", "code")
    return getattr(value, "mode", None)


class SecurityInput(ModeInput[Annotated[
    Annotated[CodeScan, Tag("code")] | Annotated[TextScan, Tag("text")] | Annotated[AuditLogScan, Tag("audit_log")],
    Discriminator(_pick_mode, custom_error_type="invalid_mode",
                  custom_error_message="mode must be one of 'code', 'text' or 'audit_log'"),
]]):
    mode_key = "mode"


class AuditThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failed_logins_per_account: int = Field(default=10, ge=1, le=100_000)
    failed_logins_per_ip: int = Field(default=20, ge=1, le=100_000)
    refresh_reuse: int = Field(default=1, ge=1, le=100_000)


class SecurityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bandit: bool = Field(default=True, description="Run bandit on Python sources.")
    entropy_base64: float = Field(default=4.5, ge=3.0, le=6.0)
    entropy_hex: float = Field(default=3.0, ge=2.0, le=4.0)
    min_entropy_length: int = Field(default=20, ge=12, le=256)
    window_minutes: int = Field(default=15, ge=1, le=30 * 24 * 60)
    thresholds: AuditThresholds = Field(default_factory=AuditThresholds)


class SecurityAgent(Agent):
    type = "security"
    Input = SecurityInput
    Config = SecurityConfig
    description = ("Finds hard-coded secrets (cloud keys, private keys, tokens, passwords, high-entropy strings) and "
                   "insecure Python patterns (bandit) in code or text, or brute-force and token-reuse patterns in "
                   "the audit log.")
    capabilities = ("secrets", "aws-keys", "private-keys", "tokens", "entropy", "bandit", "python", "audit-log",
                    "brute-force", "token-reuse")
    example_input = {
        "mode": "code",
        "language": "python",
        "filename": "deploy.py",
        "content": "import subprocess\n\nAWS_ACCESS_KEY_ID = \"AKIAZ7VRSQ4TLMPQX2WD\"\n\n\n"
                   "def deploy(target):\n    subprocess.call(\"rsync -a build/ \" + target, shell=True)\n",
    }

    def runs_isolated(self, data: BaseModel) -> bool:
        # Scanning content is pure CPU work; the audit_log mode reads the database through the task's session.
        return isinstance(data, SecurityInput) and not isinstance(data.root, AuditLogScan)

    def run(self, data: BaseModel, config: Mapping[str, Any], ctx: AgentContext | None = None) -> AgentOutput:
        assert isinstance(data, SecurityInput)
        started = time.perf_counter()
        settings = SecurityConfig.model_validate(config)
        scan = data.root
        if isinstance(scan, AuditLogScan):
            output, counted = _audit(scan, settings, ctx), {"lines_scanned": 0}
            counted["events_scanned"] = output.pop("events_scanned")
        else:
            output = _content(scan, settings)
            counted = {"lines_scanned": output.pop("lines_scanned")}
        findings = output["findings"]
        by_severity = {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITY_ORDER}
        output["summary"] = {"by_severity": by_severity, "total": len(findings)}
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        return AgentOutput(output=output, metrics={"duration_ms": duration_ms, **counted, "findings": len(findings)})


def _language(scan: CodeScan) -> str | None:
    if scan.language is not None:
        return scan.language
    if scan.filename is not None:
        return "python" if scan.filename.lower().endswith((".py", ".pyw", ".pyi")) else None
    try:
        ast.parse(scan.content)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return "python"


def _content(scan: CodeScan | TextScan, settings: SecurityConfig) -> dict[str, Any]:
    from chalicelib.agents.secrets_scan import EntropyLimits, scan_secrets, split_lines

    is_code = isinstance(scan, CodeScan)
    limits = EntropyLimits(base64=settings.entropy_base64, hex=settings.entropy_hex,
                           min_length=settings.min_entropy_length)
    secrets = scan_secrets(scan.content, code=is_code, limits=limits)
    findings, scanners = list(secrets.findings), ["secrets"]
    skipped: list[dict[str, str]] = []
    language = _language(scan) if isinstance(scan, CodeScan) else None
    if language == "python" and settings.bandit:
        from chalicelib.agents.bandit_scan import run_bandit

        found, skipped = run_bandit(scan.content, secrets.values)
        findings += found
        scanners.append("bandit")
    findings.sort(key=lambda f: (f["line"], f["column"], f["rule"]))
    output: dict[str, Any] = {"mode": scan.mode, "findings": findings, "scanners_used": scanners, "skipped": skipped,
                              "lines_scanned": len(split_lines(scan.content.rstrip("\r\n")))}
    if isinstance(scan, CodeScan):
        output["language"] = language
    return output


def _audit(scan: AuditLogScan, settings: SecurityConfig, ctx: AgentContext | None) -> dict[str, Any]:
    from sqlalchemy import select

    from chalicelib.agents.audit_scan import AuditThresholdValues, scan_audit_log
    from chalicelib.db.models import User
    from chalicelib.domain.rbac import Role

    if ctx is None:
        raise AgentError("the audit_log mode reads the platform's audit log and needs the task's database session",
                         {"mode": "audit_log"})
    overrides = scan.thresholds.model_dump(exclude_none=True) if scan.thresholds else {}
    thresholds = AuditThresholdValues(**{**settings.thresholds.model_dump(), **overrides})
    minutes = scan.window_minutes or settings.window_minutes
    end = ctx.now
    start = end - timedelta(minutes=minutes)
    with ctx.transaction() as session:  # reads only
        see_all = session.scalar(select(User.role).where(User.id == ctx.user_id)) == Role.ADMIN
        findings, scanned = scan_audit_log(session, owner_id=ctx.user_id, see_all=see_all, start=start, end=end,
                                           thresholds=thresholds)
    rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    findings.sort(key=lambda f: (rank[f["severity"]], f["rule"], -f["count"], f["first_seen"]))
    return {
        "mode": "audit_log", "findings": findings, "scanners_used": ["audit_log"], "skipped": [],
        "window": {"start": start.isoformat(), "end": end.isoformat(), "minutes": minutes},
        "scope": "all_users" if see_all else "own_account",
        "thresholds": {"failed_logins_per_account": thresholds.failed_logins_per_account,
                       "failed_logins_per_ip": thresholds.failed_logins_per_ip,
                       "refresh_reuse": thresholds.refresh_reuse},
        "events_scanned": scanned,
    }
