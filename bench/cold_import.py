"""Cold import of each Lambda entry point, as a ratio to a bare `import boto3`.

Each figure is the median of N fresh interpreter processes, timing only the
import statement (interpreter start-up excluded), all measured in this run so
machine noise affects the baseline and the candidates alike.

Budgets (issue #2): app <= 3.5x, each consumer module <= 4x.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
BUDGETS = {"app": 3.5, "functions.agent_consumer": 4.0, "functions.outbox_relay": 4.0}
SNIPPET = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_seconds(module: str) -> float:
    env = {**os.environ, "DATABASE_URL": "sqlite://", "YMERA_JWT_SECRET": "b" * 48, "PYTHONDONTWRITEBYTECODE": "0"}
    samples = []
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", SNIPPET.format(module=module)], cwd=ROOT, env=env,
                             check=True, capture_output=True, text=True).stdout
        samples.append(float(out.strip().splitlines()[-1]))
    return statistics.median(samples)


def main() -> int:
    baseline = import_seconds("boto3")
    print(f"cold import, median of {RUNS} fresh processes; baseline import boto3 = {baseline * 1000:.1f} ms")
    failed = False
    for module, budget in BUDGETS.items():
        seconds = import_seconds(module)
        ratio = seconds / baseline
        verdict = "ok" if ratio <= budget else "OVER BUDGET"
        failed |= ratio > budget
        print(f"  import {module:<28} {seconds * 1000:7.1f} ms  {ratio:4.2f}x boto3  (budget {budget}x) {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
