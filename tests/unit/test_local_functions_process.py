"""infra.local.functions: which child runs which functions under `make run` (the bulk lanes apart), `--only`,
and the pause/resume lines a parent (a benchmark) sends a warm child."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from infra import manifest
from infra.local import functions
from infra.local.functions import FunctionsError, FunctionsProcess, process_groups, select, triggered
from tests.unit.emulator_support import recorded_spawns


def test_make_run_gives_the_bulk_lanes_a_child_of_their_own_and_everything_else_the_other() -> None:
    specs = triggered(manifest.functions())
    groups = {label: names for label, names, _ in process_groups(specs)}
    assert [(label, nice) for label, _, nice in process_groups(specs)] == [
        ("functions", 0), ("bulk lanes", functions.BULK_LANES_NICE)]
    assert set(groups) == {"functions", "bulk lanes"}
    assert sorted(groups["functions"] + groups["bulk lanes"]) == sorted(spec.name for spec in specs)
    assert groups["bulk lanes"] == [f"agent-{t}-bulk" for t in manifest.AGENT_CONSUMERS]
    assert "agent-validation" in groups["functions"] and "notifier" in groups["functions"]


def test_only_selects_by_name_and_refuses_a_name_it_does_not_have() -> None:
    specs = triggered(manifest.functions())
    assert [s.name for s in select(specs, ["agent-validation-bulk"])] == ["agent-validation-bulk"]
    assert select(specs, None) == specs
    with pytest.raises(FunctionsError, match="agent-nope"):
        select(specs, ["agent-validation", "agent-nope"])


def test_spawn_passes_only_and_nice_to_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    started = recorded_spawns(monkeypatch)
    functions.spawn_functions(only=["agent-validation", "agent-validation-bulk"], nice=5)
    functions.spawn_functions()
    assert started[0][-4:] == ["--only", "agent-validation,agent-validation-bulk", "--nice", "5"]
    assert "--only" not in started[1] and "--nice" not in started[1]


def test_the_child_pauses_and_resumes_its_runner_on_the_parents_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class Runner:
        def stop(self, timeout: float) -> None:
            calls.append("stop")

        def start(self) -> None:
            calls.append("start")

    class Stdin:
        buffer = io.BytesIO(b"pause\nresume\nbogus\n")

    killed: list[int] = []
    monkeypatch.setattr(functions.sys, "stdin", Stdin)
    monkeypatch.setattr(functions.os, "kill", lambda pid, sig: killed.append(sig))
    read, write = os.pipe()
    with os.fdopen(read, "rb") as answers:
        functions._commands(Runner(), write)  # type: ignore[arg-type]
        os.close(write)
        assert answers.read() == b"paused\nresumed\n"  # nothing for the unknown word
    assert calls == ["stop", "start"]
    assert killed == [functions.signal.SIGTERM]  # EOF: the parent is gone


def test_the_parent_waits_for_the_childs_answer_and_says_when_it_does_not_come() -> None:
    echo = ("import sys\nfor line in sys.stdin:\n"
            "    print(line.strip() + ('d' if line.strip() == 'pause' else 'x'), flush=True)")
    proc = subprocess.Popen([sys.executable, "-c", echo], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child = FunctionsProcess(proc, on_exit=None)
    try:
        child.pause(timeout=10)  # answered "paused"
        with pytest.raises(FunctionsError, match="did not resume"):
            child.resume(timeout=10)  # answered "resumex"
    finally:
        child.stop()
