"""Insecure Python patterns, found by bandit (PyCQA's maintained scanner) through its Python API.

bandit reads files, so the source goes to a private temporary directory for the
duration of the scan. bandit and its plugins are imported here, inside the call,
never at module import (they cost cold start to every other consumer).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chalicelib.agents.secrets_scan import MAX_SNIPPET, scrub, split_lines
from chalicelib.errors import AgentError

#: bandit's hard-coded-password tests (B105-B107) echo the password in their message; the secrets scanner
#: covers the same ground and redacts, so these are left out rather than scrubbed after the fact.
EXCLUDED_TESTS = frozenset({"B105", "B106", "B107"})
SEVERITIES = {"LOW": "low", "MEDIUM": "medium", "HIGH": "high"}

_SUBPROCESS = ("Pass the command as a list of arguments without shell=True, and never build it from untrusted "
               "input; if a shell is unavoidable, quote every argument with shlex.quote.")
#: What to do instead, for bandit's most common tests; the rest point at bandit's documentation page.
REMEDIATIONS: dict[str, str] = {
    "B102": "Do not exec strings; dispatch to known functions (a dict of callables) instead.",
    "B104": "Bind to a specific interface (127.0.0.1, or the one the service is meant to serve on).",
    "B108": "Use tempfile.mkstemp / TemporaryDirectory instead of a fixed path in a shared temp directory.",
    "B110": "Catch the specific exception and log or handle it; a silent `except: pass` hides failures.",
    "B201": "Never run Flask with debug=True outside a developer machine: the debugger executes code.",
    "B301": "Do not unpickle untrusted data; use JSON (or another data-only format) across trust boundaries.",
    "B303": "Use SHA-256 or better (hashlib.sha256); MD5 and SHA-1 are broken for security purposes.",
    "B307": "Use ast.literal_eval for literals, or parse the input explicitly; eval runs arbitrary code.",
    "B311": "Use the secrets module (secrets.token_urlsafe, secrets.choice) for anything security-related.",
    "B324": "Use SHA-256 or better; if MD5/SHA-1 is only a checksum, pass usedforsecurity=False.",
    "B403": "Avoid pickle for data that crosses a trust boundary; prefer JSON.",
    "B404": "Check that every subprocess call passes an argument list without shell=True.",
    "B501": "Keep certificate verification on (verify=True, the default); trust a private CA with verify=PATH.",
    "B506": "Use yaml.safe_load; yaml.load with the default Loader can construct arbitrary objects.",
    "B602": _SUBPROCESS, "B603": _SUBPROCESS, "B604": _SUBPROCESS, "B605": _SUBPROCESS, "B607": _SUBPROCESS,
    "B608": "Use bound parameters (cursor.execute(sql, params) or SQLAlchemy's text() with bindparams); "
            "never format values into SQL.",
}


class ScannerUnavailableError(AgentError):
    """A scanner the scan needs cannot be loaded: a packaging problem, not something a retry fixes."""

    code = "SCANNER_UNAVAILABLE"


def run_bandit(source: str, values: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """bandit's findings for one Python source (secrets in `values` scrubbed), and why it skipped it, if it did."""
    # Loading bandit logs an error for each optional output formatter it lacks (SARIF) and warns about stevedore
    # API changes; a scan logs a warning for a file it cannot parse, which the result reports instead.
    with _quiet("stevedore", "bandit"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from bandit.core import config as bandit_config
            from bandit.core import docs_utils
            from bandit.core import manager as bandit_manager
        except ImportError as exc:
            # Failing loudly beats a report that silently lacks its code-pattern half.
            raise ScannerUnavailableError("bandit (the Python code scanner) is not installed in this runtime",
                                          {"scanner": "bandit", "reason": str(exc)}) from exc
        manager = bandit_manager.BanditManager(bandit_config.BanditConfig(), "file",
                                               profile={"exclude": set(EXCLUDED_TESTS)})
        with tempfile.TemporaryDirectory(prefix="ymera-bandit-") as tmp:
            path = Path(tmp) / "scanned.py"
            path.write_text(source, encoding="utf-8")
            manager.discover_files([str(path)])
            manager.run_tests()
    lines = split_lines(source)
    findings = [_finding(issue, lines, values, docs_utils.get_url) for issue in manager.get_issue_list()]
    skipped = [{"scanner": "bandit", "reason": str(reason)} for _, reason in manager.skipped]
    return findings, skipped


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _finding(issue: Any, lines: list[str], values: set[str], url_for: Any) -> dict[str, Any]:
    line = lines[issue.lineno - 1] if 0 < issue.lineno <= len(lines) else ""
    cwe = getattr(issue.cwe, "id", 0) if issue.cwe else 0
    return {
        "rule": issue.test_id,
        "severity": SEVERITIES.get(issue.severity, "low"),
        "line": issue.lineno,
        "column": issue.col_offset + 1,
        "snippet": scrub(line.strip(), values)[:MAX_SNIPPET],
        "message": scrub(issue.text, values),
        "remediation": REMEDIATIONS.get(issue.test_id, f"See {url_for(issue.test_id)}"),
        "scanner": "bandit",
        "name": issue.test,
        "confidence": SEVERITIES.get(issue.confidence, "low"),
        "cwe": f"CWE-{cwe}" if cwe else None,
    }
