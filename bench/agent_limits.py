"""Each pathological input of issue #7 §2, run through its agent as the consumer runs it (the sandbox's
budget, isolation and output cap: chalicelib.agents.sandbox.run_task_agent), or refused at POST /tasks.

Budget: every input finishes or is refused within the agent wall-clock budget (15 s, the Settings
default); the "before" column is what the same input took on the code before the fix (one core of this
machine; the issue's figures where it gave them, ours otherwise). Also the fork overhead per task.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.agents.registry import get_agent, validate_input  # noqa: E402
from chalicelib.agents.sandbox import DEFAULT_WALL_SECONDS, run_bounded, run_task_agent  # noqa: E402
from chalicelib.errors import AgentError, ValidationError  # noqa: E402


def ref_chain(levels: int) -> dict[str, Any]:
    defs: dict[str, Any] = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
                            for i in range(levels)}
    defs[f"d{levels}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def python_source(size: int) -> str:
    unit = "".join(f"def f{i}(x):\n    if x > {i}:\n        return x\n    return y{i}\n\n" for i in range(100))
    return (unit * (size // len(unit) + 1))[:size].rsplit("\n\ndef", 1)[0] + "\n"


#: (label, agent type, input_data, seconds before the fix, where the before figure comes from)
CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("pattern ^(a+)+$ on 26 chars", "validation",
     {"schema": {"type": "string", "pattern": "^(a+)+$"}, "payload": "a" * 25 + "!"}, "15 s (issue)"),
    ("1.3 KB $ref/allOf chain", "validation", {"schema": ref_chain(20), "payload": "x"}, "167 s, 64 MB (issue)"),
    ("uniqueItems, 5,000 objects", "validation",
     {"schema": {"uniqueItems": True}, "payload": [{"id": i, "tags": ["a"]} for i in range(5000)]}, "148 s (issue)"),
    ("data quality 97 KB records x rules", "validation",
     {"records": [{"id": i} for i in range(3000)], "rules": {"required": [f"f{i}" for i in range(1500)]}},
     "51 s (issue)"),
    ("data quality at its cap (2M reads)", "validation",
     {"records": [{"id": i} for i in range(10_000)], "rules": {"required": [f"a.b{i}" for i in range(200)]}},
     "-"),
    ("secrets: one 20 KB line", "security", {"mode": "text", "content": "a" * 20_000}, "98 s (issue)"),
    ("secrets: 20 KB line + URL", "security", {"mode": "code", "content": "a" * 20_000 + "://x"}, "81 s (ours)"),
    ("textstats BOUNDARY, 20 KB", "enhancement", {"kind": "document", "content": "." * 20_000 + "x"},
     "79 s (issue), 21 s (ours)"),
    ("enhancement JSON, 200 KB of keys", "enhancement",
     {"kind": "config", "filename": "c.json",
      "content": json.dumps({f"key{i}": {"password": "x"} for i in range(5_500)}, indent=1)}, "1.5 s (ours)"),
    ("enhancement JSON nested 5,000 deep", "enhancement",
     {"kind": "config", "filename": "c.json", "content": "[" * 5000 + "]" * 5000}, "RecursionError (crash)"),
    ("examination 490 KB of Python", "examination", {"source": python_source(490_000)},
     "10.8 s (issue), 20 s (ours, loaded)"),
    ("examination 200 KB (its cap)", "examination", {"source": python_source(199_000)}, "3.7 s (ours)"),
]


def run_case(agent_type: str, input_data: dict[str, Any]) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        normalised = validate_input(agent_type, input_data)
    except ValidationError:
        return "422 at POST /tasks", time.perf_counter() - started
    agent = get_agent(agent_type)
    data = agent.Input.model_validate(normalised)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_task_agent(agent, data, {}, None)
    except AgentError as exc:
        return f"failed {exc.code}", time.perf_counter() - started
    truncated = " (output truncated)" if result.output.get("truncated") is True else ""
    return f"completed{truncated}", time.perf_counter() - started


def drafting_heading() -> tuple[str, float]:
    # A model's draft, not an input: its markdown heading regex backtracked cubically (580 s on 5,000 spaces).
    from chalicelib.agents.drafting import _from_markdown

    started = time.perf_counter()
    _from_markdown("# a" + " " * 5000 + "b\nbody")
    return "parsed", time.perf_counter() - started


def fork_overhead() -> tuple[float, float]:
    agent = get_agent("validation")
    data = agent.Input.model_validate(agent.example_input)

    def median(isolate: bool) -> float:
        samples = []
        for _ in range(30):
            started = time.perf_counter()
            run_bounded(agent, data, {}, None, 5, 256 << 20, isolate=isolate)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    return median(False), median(True)


def main() -> int:
    budget = DEFAULT_WALL_SECONDS
    print(f"pathological inputs (budget {budget:g} s each; run as the consumer runs them)")
    print(f"  {'input':<38} {'outcome':<34} {'after':>8}   before")
    failed = False
    rows: list[tuple[str, Callable[[], tuple[str, float]], str]] = [
        (label, lambda t=agent_type, d=data: run_case(t, d), before) for label, agent_type, data, before in CASES]
    rows.append(("drafting: heading with 5,000 spaces", drafting_heading, "580 s (ours)"))
    for label, fn, before in rows:
        outcome, seconds = fn()
        over = seconds > budget
        failed |= over
        print(f"  {label:<38} {outcome:<34} {seconds:7.3f}s   {before}{'  OVER BUDGET' if over else ''}")
    in_process, isolated = fork_overhead()
    print(f"fork overhead: a small validation task {in_process * 1000:.1f} ms in-process, "
          f"{isolated * 1000:.1f} ms isolated (+{(isolated - in_process) * 1000:.1f} ms); inputs under "
          "agent_isolate_min_bytes (16 KB) run in-process")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
