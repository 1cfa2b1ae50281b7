"""Regular expressions a user wrote, run on a linear-time engine (google-re2), never on Python's `re`.

Python's backtracking engine takes exponential time on patterns such as `^(a+)+$`; RE2 takes time linear
in the text for every pattern it accepts. What RE2 cannot run (backreferences, lookaround, repetition
counts over 1000) is refused with the reason, never handed to `re` instead.

`jsonschema` calls `re.search(pattern, text)` from a few helper modules (patternProperties, and the
property sets additionalProperties / unevaluatedProperties compute from them); `route_jsonschema` points
those modules' `re` at `Re2Search`, so every pattern a schema holds runs on RE2. Python-side callers of
those modules (our own meta-schemas, test tools) keep working: a pattern RE2 refuses falls back to `re`
there, which never happens to a user's schema because the validation agent refuses such schemas first.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

#: longest pattern accepted (RE2's memory for a compiled pattern grows with it).
MAX_PATTERN_LENGTH = 1000
#: RE2's memory budget per compiled pattern (its default is 8 MiB).
MAX_PATTERN_MEMORY = 8 << 20


class UnsafePatternError(ValueError):
    """RE2 cannot compile the pattern (or it is too long): it is refused, not run on a backtracking engine."""


@lru_cache(maxsize=512)
def compile_user_pattern(pattern: str) -> Any:
    import re2  # type: ignore[import-untyped]

    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafePatternError(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = MAX_PATTERN_MEMORY
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise UnsafePatternError(f"pattern is not supported by the linear-time (RE2) engine: {reason}") from exc


def compile_linear(pattern: str) -> Any:
    """One of our own patterns on RE2: for those Python's engine would run in quadratic time on a long line."""
    import re2  # type: ignore[import-untyped]

    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def is_valid_pattern(pattern: object) -> bool:
    """The `regex` format: a string RE2 compiles (jsonschema's format checker hook)."""
    if not isinstance(pattern, str):
        return True
    compile_user_pattern(pattern)
    return True


class Re2Search:
    """A stand-in for the `re` module inside jsonschema's helper modules: `search` runs on RE2."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def search(pattern: str, string: str, flags: int = 0) -> Any:
        if flags:
            return re.search(pattern, string, flags)
        try:
            compiled = compile_user_pattern(pattern)
        except UnsafePatternError:
            return re.search(pattern, string)
        return compiled.search(string)


@lru_cache(maxsize=1)
def route_jsonschema() -> None:
    """Point jsonschema's pattern-matching helpers at RE2 (idempotent)."""
    from jsonschema import _keywords, _legacy_keywords, _utils  # type: ignore[import-untyped]

    shim = Re2Search()
    for module in (_keywords, _legacy_keywords, _utils):
        module.re = shim
