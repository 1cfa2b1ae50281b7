"""Run every benchmark in bench/ (each prints ratios against a baseline from the same run); what `make bench` runs.

Each bench exits 1 when it is over its budget (or fails); this exits 1 when any did, after a summary table:
bench, result (ok / OVER BUDGET / failed, exit N / timed out), seconds. `python bench/run_all.py NAME ...` runs
only those (with or without `.py`); BENCH_TIMEOUT (default 1800 s) ends a bench that hangs, as a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "1800"))


def scripts(names: list[str]) -> list[Path]:
    found = [s for s in sorted(HERE.glob("*.py"))
             if s.name not in {"run_all.py", "__init__.py"} and not s.name.startswith("_")]
    if not names:
        return found
    wanted = {n.removesuffix(".py") for n in names}
    unknown = wanted - {s.stem for s in found}
    if unknown:
        raise SystemExit(f"no such bench: {', '.join(sorted(unknown))}")
    return [s for s in found if s.stem in wanted]


def run(script: Path) -> tuple[str, float]:
    """Run one bench, echoing its output; its result and wall seconds."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script)], cwd=HERE.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    over = False

    def echo() -> None:
        nonlocal over
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            over |= "OVER" in line  # every bench prints OVER (BUDGET) on its budget line when over it

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        code = proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(5)
        return f"timed out after {TIMEOUT:.0f} s", time.monotonic() - started
    reader.join(5)
    seconds = time.monotonic() - started
    if code == 0:
        return "ok", seconds
    return ("OVER BUDGET" if over else f"failed, exit {code}"), seconds


def main(argv: list[str]) -> int:
    results: list[tuple[str, str, float]] = []
    for script in scripts(argv):
        print(f"== {script.name}", flush=True)
        result, seconds = run(script)
        results.append((script.name, result, seconds))
    width = max((len(name) for name, _, _ in results), default=5)
    print(f"\n{'bench':<{width}}  {'result':<24} {'seconds':>8}")
    for name, result, seconds in results:
        print(f"{name:<{width}}  {result:<24} {seconds:8.1f}")
    bad = [name for name, result, _ in results if result != "ok"]
    print(f"{len(results) - len(bad)} of {len(results)} within budget"
          + (f"; over budget or failed: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
