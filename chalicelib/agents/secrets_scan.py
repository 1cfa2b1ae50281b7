"""Hard-coded secrets in source code or text: pattern rules plus an entropy rule.

Pure functions, standard library only. Every finding is located (1-based line
and column) and carries a redacted snippet: the secret itself never leaves this
module, only a short prefix/suffix of it (`redact`). Specific rules run first;
the high-entropy rule only looks at what no specific rule already claimed, so one
secret is one finding.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chalicelib.agents.user_regex import compile_linear

MAX_SNIPPET = 200
#: CWE-798, Use of Hard-coded Credentials (private keys get CWE-321, Use of Hard-coded Cryptographic Key).
HARD_CODED_CREDENTIALS = "CWE-798"
#: Kept out of every snippet and message, whatever the rule (see SecretScan.values).
MASK = "****"


@dataclass(frozen=True)
class PatternRule:
    rule: str
    severity: str
    pattern: Any  # re.Pattern, or an RE2 pattern for the rules that would backtrack
    message: str
    remediation: str
    #: regex group holding the secret itself (the rest of the match is context).
    group: int = 0


ROTATE = "Revoke and rotate it now (treat it as leaked wherever this text went), then load it at run time " \
         "from a secret store (AWS Secrets Manager, SSM Parameter Store) or the environment."

PATTERN_RULES: tuple[PatternRule, ...] = (
    PatternRule("aws-access-key-id", "critical", re.compile(r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b"),
                "AWS access key id", "Deactivate the key in IAM and rotate it; use an IAM role or the "
                "environment (AWS_ACCESS_KEY_ID) instead of a literal.", 1),
    PatternRule("aws-secret-access-key", "critical",
                re.compile(r"(?i)(?:aws_?secret(?:_?access)?_?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?"
                           r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
                "AWS secret access key", "Deactivate the key pair in IAM and rotate it; " + ROTATE, 1),
    PatternRule("github-token", "high",
                re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b"),
                "GitHub token", ROTATE, 1),
    PatternRule("slack-token", "high", re.compile(r"\b(xox[abposr]-[A-Za-z0-9-]{10,})"), "Slack token", ROTATE, 1),
    PatternRule("slack-webhook", "medium",
                re.compile(r"(https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,})"),
                "Slack incoming-webhook URL (anyone holding it can post to the channel)", ROTATE, 1),
    PatternRule("stripe-live-key", "critical", re.compile(r"\b((?:sk|rk)_live_[A-Za-z0-9]{16,})\b"),
                "Stripe live secret key", ROTATE, 1),
    PatternRule("stripe-test-key", "low", re.compile(r"\b((?:sk|rk)_test_[A-Za-z0-9]{16,})\b"),
                "Stripe test-mode secret key", "Test keys cannot move money, but rotate it and keep it out of "
                "source anyway: " + ROTATE, 1),
    # RE2: on Python's engine every `eyJ` after a `-` rescanned the rest of the run (quadratic in the line).
    PatternRule("jwt", "medium", compile_linear(r"\b(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"),
                "JSON Web Token", "A token works until it expires: revoke it if it is live, and never commit tokens "
                "(fixtures can mint their own at test time).", 1),
)

_PRIVATE_KEY_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY(?: BLOCK)?-----")
_PRIVATE_KEY_END = re.compile(r"-----END ((?:[A-Z0-9]+ )*)PRIVATE KEY(?: BLOCK)?-----")

_SECRET_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
#: Python's `\s` and `\w` (Unicode) spelled for RE2, whose own `\s` and `\w` are ASCII only.
_SPACE_CHARS = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_S = f"[{_SPACE_CHARS}]"
_WORD_CHARS = r"\p{L}\p{N}_"
#: `password = "…"`, `"api_key": "…"`, `token: '…'` — a quoted literal assigned to a secret-sounding name.
#: On RE2 (linear time): on Python's engine one 20 KB line of name characters took 98 s. The quote pair is two
#: alternatives because RE2 has no backreferences; the value is group `dq` or `sq`.
_QUOTED_ASSIGNMENT = compile_linear(
    rf"(?P<name>{_SECRET_NAME})[\"']?(?:{_S}*:{_S}*[A-Za-z_][{_WORD_CHARS}\[\]., |]*?)?"
    rf"{_S}*(?::=|=|:){_S}*(?:\"(?P<dq>[^\"'{_SPACE_CHARS}]+)\"|'(?P<sq>[^\"'{_SPACE_CHARS}]+)')")
#: `PASSWORD=hunter2` / `password: hunter2` on a line of its own (.env, YAML, properties). Text only: in code an
#: unquoted right-hand side is an expression, not a literal.
_NAME, _DQ, _SQ = (_QUOTED_ASSIGNMENT.groupindex[g] for g in ("name", "dq", "sq"))
_BARE_ASSIGNMENT = re.compile(rf"^\s*(?:export\s+)?(?P<name>{_SECRET_NAME})\s*[:=]\s*(?P<value>[^\s\"'#]+)\s*$")
_PASSWORD_NAME = re.compile(r"(?i)(passw(?:or)?d|passwd|pwd|passphrase)")
#: Values that name something rather than being a secret: CONSTANT_CASE, snake_case words, or any value that
#: is words around "password" (`FORCE_CHANGE_PASSWORD = "FORCE_CHANGE_PASSWORD"`, `"no-password-required"`).
_IDENTIFIER_VALUE = re.compile(r"^(?:[A-Z][A-Z0-9_]*|[a-z]+(?:_[a-z]+)+|(?i:[a-z_-]*passw(?:or)?d[a-z_-]*))$")
_SECRET_SOUNDING = re.compile(
    r"(?i)(secret|api_?key|apikey|access_?key|auth_?token|token|credential|private_?key|signing_?key|encryption_?key|"
    r"hmac_?key)")
#: Values that say "fill me in" rather than being a secret.
_PLACEHOLDER = re.compile(r"(?i)^(?:\$\{?.*|\{\{.*|<.*>|%\(.*|x+|\*+|\.+|changeme|change_me|password|secret|"
                          r"example|dummy|redacted|none|null|true|false|test|todo|your[_-].*)$")

_CANDIDATE = re.compile(r"[A-Za-z0-9+/_\-]{16,}={0,2}")
#: Line breaks as Python (and so bandit) counts them; str.splitlines also splits on \\f and friends.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_URL = compile_linear(rf"[A-Za-z][A-Za-z0-9+.-]*://[^{_SPACE_CHARS}]+")
#: see `_looks_like_words`.
MIN_SWITCH_RATE = 0.35
WORDS_SHARE = 0.5
_WORD_RUN = re.compile(r"[A-Z]?[a-z]{3,}")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: A line about hashes, ids or versions: hex strings on it are digests, not keys.
_DIGEST_CONTEXT = re.compile(r"(?i)(sha\d*|md5|hash|digest|checksum|integrity|commit|etag|revision|uuid|guid|\bid\b)")
_KEY_CONTEXT = re.compile(r"(?i)(key|secret|token|passw|auth|credential|signature|bearer)")


@dataclass(frozen=True)
class EntropyLimits:
    #: bits per character a base64-alphabet string must reach (capped by its length: see `required_entropy`).
    base64: float = 4.5
    #: bits per character for a hex string (at most 4.0 is possible).
    hex: float = 3.0
    min_length: int = 20


@dataclass
class SecretScan:
    findings: list[dict[str, Any]] = field(default_factory=list)
    #: every secret value found, so other scanners' text can be scrubbed of them too.
    values: set[str] = field(default_factory=set)


def shannon_entropy(value: str) -> float:
    """Bits per character of `value`'s own character distribution."""
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def required_entropy(length: int, limit: float) -> float:
    """A string of n characters has at most log2(n) bits per character; ask for 85% of that, up to `limit`.

    Without the cap a 24-character random token (at most 4.58 bits) could never reach 4.5 in practice.
    """
    return min(limit, 0.85 * math.log2(length))


def redact(value: str) -> str:
    """A recognisable stub of a secret: 4 leading and 2 trailing characters of a long one, less of a short one."""
    if len(value) >= 16:
        return f"{value[:4]}{MASK}{value[-2:]}"
    if len(value) >= 8:
        return f"{value[:2]}{MASK}"
    return MASK


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    rule: str
    severity: str
    message: str
    remediation: str = ROTATE
    confidence: str = "high"


def scan_secrets(content: str, *, code: bool, limits: EntropyLimits | None = None) -> SecretScan:
    """Find hard-coded secrets. `code` is False for free text and config, where bare `KEY=value` lines count."""
    limits = limits or EntropyLimits()
    scan = SecretScan()
    lines = split_lines(content)
    skip_lines = _private_keys(lines, scan)
    for index, line in enumerate(lines):
        if index in skip_lines:
            continue
        claimed = _Spans()
        # Most specific first: a span a rule has reported is not reported again by a vaguer one.
        for hit in (*_pattern_hits(line), *_assignment_hits(line, code), *_entropy_hits(line, limits)):
            if claimed.overlaps(hit.start, hit.end):
                continue
            claimed.add(hit.start, hit.end)
            secret = line[hit.start:hit.end]
            scan.values.add(secret)
            scan.findings.append({
                "rule": hit.rule, "name": hit.rule, "severity": hit.severity, "confidence": hit.confidence,
                "line": index + 1, "column": hit.start + 1, "snippet": _snippet(line, hit.start, hit.end),
                "message": f"{hit.message}: {redact(secret)}", "remediation": hit.remediation, "scanner": "secrets",
                "cwe": HARD_CODED_CREDENTIALS,
            })
    scan.findings.sort(key=lambda f: (f["line"], f["column"], f["rule"]))
    return scan


def _pattern_hits(line: str) -> Iterator[Hit]:
    for rule in PATTERN_RULES:
        for m in rule.pattern.finditer(line):
            severity, message = rule.severity, rule.message
            if rule.rule == "aws-access-key-id" and m.group(rule.group).endswith("EXAMPLE"):
                severity, message = "low", "AWS documentation's example access key id"
            yield Hit(m.start(rule.group), m.end(rule.group), rule.rule, severity, message, rule.remediation)


def _assignment_hits(line: str, code: bool) -> Iterator[Hit]:
    for name, start, end in _assignments(line, code):
        value = line[start:end]
        if _UUID.match(value) or _IDENTIFIER_VALUE.match(value):
            continue
        if _PASSWORD_NAME.search(name):
            yield Hit(start, end, "password-assignment", "high", f"hard-coded password in {name!r}")
        elif _SECRET_SOUNDING.search(name) and _looks_random(value):
            yield Hit(start, end, "secret-assignment", "high", f"hard-coded secret in {name!r}", confidence="medium")


class _Spans:
    """Disjoint [start, end) spans of one line, sorted: an overlap test is a binary search, not a scan of all."""

    def __init__(self, spans: Iterable[tuple[int, int]] = ()) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for start, end in spans:
            self.add(start, end)

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect_left(self.starts, end)  # spans starting before `end`; the last of them is the only candidate
        return i > 0 and self.ends[i - 1] > start

    def contains(self, offset: int) -> bool:
        return self.overlaps(offset, offset + 1)

    def add(self, start: int, end: int) -> None:
        i = bisect_left(self.starts, start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)


def _entropy_hits(line: str, limits: EntropyLimits) -> Iterator[Hit]:
    urls = _Spans(m.span() for m in _URL.finditer(line))
    for m in _CANDIDATE.finditer(line):
        value = m.group(0)
        if len(value) < limits.min_length or urls.contains(m.start()):
            continue  # short, or part of a link (credentials in URLs have their own rules)
        limit = _entropy_limit(value, line, limits)
        bits = shannon_entropy(value)
        if limit is not None and bits >= required_entropy(len(value), limit):
            yield Hit(m.start(), m.end(), "high-entropy-string", "medium",
                      f"high-entropy string ({bits:.2f} bits/char), likely a key or token", confidence="medium")


def _entropy_limit(value: str, line: str, limits: EntropyLimits) -> float | None:
    """The entropy limit for this candidate, or None when it is no candidate at all."""
    if _UUID.match(value):
        return None
    if _HEX.match(value):
        # Hex strings are mostly digests and ids: a candidate only where the line talks about keys.
        return None if _DIGEST_CONTEXT.search(line) or not _KEY_CONTEXT.search(line) else limits.hex
    # Identifiers and paths are long too; a secret mixes cases and digits.
    mixed = any(c.isdigit() for c in value) and any(c.isupper() for c in value) and any(c.islower() for c in value)
    return limits.base64 if mixed and not _looks_like_words(value) else None


def split_lines(content: str) -> list[str]:
    """Lines numbered as Python's compiler numbers them (str.splitlines also breaks at form feeds and more)."""
    return _LINE_BREAK.split(content)


def scrub(text: str, values: set[str]) -> str:
    """Replace every known secret in `text` (another scanner's snippet or message) by its redacted stub."""
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, redact(value))
    return text


def _snippet(line: str, start: int, end: int) -> str:
    return (line[:start] + redact(line[start:end]) + line[end:]).strip()[:MAX_SNIPPET]


def _private_keys(lines: list[str], scan: SecretScan) -> set[int]:
    """One finding per PEM private-key block, at its BEGIN line; the block's body is not scanned again."""
    consumed: set[int] = set()
    for index, line in enumerate(lines):
        begin = _PRIVATE_KEY_BEGIN.search(line) if index not in consumed else None
        if begin is None:
            continue
        end = next((j for j in range(index, len(lines)) if _PRIVATE_KEY_END.search(lines[j])), None)
        last = end if end is not None else len(lines) - 1
        body = lines[index + 1:last]
        scan.values.update(b.strip() for b in body if b.strip())
        scan.findings.append(_private_key_finding(index, begin, body, closed=end is not None))
        consumed.update(range(index, last + 1))
    return consumed


def _private_key_finding(index: int, begin: re.Match[str], body: list[str], closed: bool) -> dict[str, Any]:
    kind = begin.group(1).strip()
    encrypted = kind == "ENCRYPTED" or any("ENCRYPTED" in b for b in body[:3])
    label = f"{kind} PRIVATE KEY" if kind else "PRIVATE KEY"
    return {
        "rule": "private-key", "name": "private-key", "severity": "high" if encrypted else "critical",
        "confidence": "high", "line": index + 1, "column": begin.start() + 1,
        "snippet": f"-----BEGIN {label}----- [{len(body)} lines redacted] "
                   + (f"-----END {label}-----" if closed else "(no END line)"),
        "message": f"{'passphrase-protected ' if encrypted else ''}{label.lower()} block",
        "remediation": "Remove the key from the source and its history, replace the key pair (the public half "
                       "is compromised too), and mount the new key from a secret store at run time.",
        "scanner": "secrets", "cwe": "CWE-321",
    }


def _assignments(line: str, code: bool) -> Iterator[tuple[str, int, int]]:
    """(name, value start, value end) of literal values assigned on this line."""
    for m in _QUOTED_ASSIGNMENT.finditer(line):
        group = _DQ if m.group(_DQ) is not None else _SQ
        value = m.group(group)
        if not _PLACEHOLDER.match(value) and len(value) >= 4:
            yield m.group(_NAME), m.start(group), m.end(group)
    if not code:
        bare = _BARE_ASSIGNMENT.match(line)
        if bare and not _PLACEHOLDER.match(bare.group("value")) and len(bare.group("value")) >= 4:
            yield bare.group("name"), bare.start("value"), bare.end("value")


def _looks_random(value: str) -> bool:
    """A token-ish literal (`token = "abc"` is a name, not a credential): long enough and mixed."""
    return len(value) >= 12 and shannon_entropy(value) >= 3.0 and any(c.isdigit() for c in value)


def _class_switch_rate(value: str) -> float:
    """Share of neighbouring characters of different kinds (upper, lower, digit, other).

    About 0.65 for random base64; words, identifiers and alphabets switch far less often.
    """
    kinds = ["u" if c.isupper() else "l" if c.islower() else "d" if c.isdigit() else "o" for c in value]
    return sum(a != b for a, b in zip(kinds, kinds[1:], strict=False)) / max(len(value) - 1, 1)


def _looks_like_words(value: str) -> bool:
    """Identifiers, slugs and alphabets: few changes of character kind, or mostly made of word-like runs.

    Random base64 changes kind at about 0.65 of its neighbouring characters and rarely holds a run of
    four lowercase letters; `ApiGatewayV2Response` or `abcdefghijklmnopqrstuvwxyzABC0123` do neither.
    """
    # Separators are left out: `RESP3-to-RESP2-legacy` switches kind at every hyphen.
    letters = re.sub(r"[^A-Za-z0-9]", "", value)
    in_words = sum(len(m.group(0)) for m in _WORD_RUN.finditer(letters))
    return _class_switch_rate(letters) < MIN_SWITCH_RATE or in_words >= WORDS_SHARE * len(letters)
