"""Global invalidation across real processes: a second Python process holds an L1-warmed cache
of an agent; after every `PUT /agents/{id}` in this process returns, the other process never
reads the old value, neither step by step nor while it reads in a tight loop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.container import Container
from tests.conftest import ROOT
from tests.integration.conftest import Api

#: The other process: a Container built from the same environment (Postgres, Redis, key prefix), so it
#: has its own L1 and shares only Redis and the database with the test process. Speaks JSON lines.
CHILD = r"""
import json, sys, threading, time, uuid
sys.path.insert(0, sys.argv[1])
from chalicelib.config import Settings
from chalicelib.container import Container

container = Container(Settings())
owner, agent_id = uuid.UUID(sys.argv[2]), uuid.UUID(sys.argv[3])

def read():
    agent = container.agents.get(owner, agent_id)
    return agent.name

def reply(**data):
    stats = container.cache.stats
    print(json.dumps({"l1_hits": stats.l1_hits, "l2_hits": stats.l2_hits, "misses": stats.misses, **data}),
          flush=True)

for line in sys.stdin:
    command = line.strip()
    if command == "read":
        reply(name=read())
    elif command == "loop":  # read until told to stop; report (start time, value) of every read
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
        reads = []
        reply(looping=True)
        while not stop.is_set():
            started = time.monotonic_ns()
            reads.append((started, read()))
        reply(reads=reads)
    elif command == "quit":
        break
"""


class Child:
    def __init__(self, owner: uuid.UUID, agent_id: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(owner), agent_id],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=5)
            raise AssertionError(f"child process died: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return dict(json.loads(line))

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def agent_in_two_processes(api: Api, container: Container) -> Iterator[tuple[dict[str, Any], Child]]:
    api.signup()
    agent = api.agent(name="rev-0")
    assert api.token is not None
    owner = container.tokens.verify(api.token, "access").user_id
    child = Child(owner, agent["id"])
    try:
        yield agent, child
    finally:
        child.close()


def test_an_update_is_never_missed_by_another_process_l1(api: Api,
                                                         agent_in_two_processes: tuple[dict[str, Any], Child]) -> None:
    agent, child = agent_in_two_processes
    assert child.ask("read")["name"] == "rev-0"
    warm = child.ask("read")
    assert warm["name"] == "rev-0" and warm["l1_hits"] == 1  # the other process serves it from its L1

    for rev in range(1, 6):
        assert api.call("PUT", f"/agents/{agent['id']}", {"name": f"rev-{rev}"}).status_code == 200
        after = child.ask("read")
        assert after["name"] == f"rev-{rev}"
        again = child.ask("read")
        assert again["name"] == f"rev-{rev}" and again["l1_hits"] == after["l1_hits"] + 1


def test_no_read_that_starts_after_an_update_returns_sees_the_old_value(
        api: Api, agent_in_two_processes: tuple[dict[str, Any], Child]) -> None:
    """GIVEN another process reading the agent in a tight loop (mostly L1 hits),
    WHEN this process updates it 20 times, THEN every read the other process started after update k
    returned shows revision k or later. Both processes stamp with CLOCK_MONOTONIC (system-wide)."""
    agent, child = agent_in_two_processes
    child.ask("read")
    assert child.ask("loop")["looping"] is True
    returned_at: list[int] = []
    for rev in range(1, 21):
        assert api.call("PUT", f"/agents/{agent['id']}", {"name": f"rev-{rev}"}).status_code == 200
        returned_at.append(time.monotonic_ns())
        time.sleep(0.005)  # let the reader take a few turns at this revision
    time.sleep(0.2)  # and some more after the last one
    child.send("stop")
    report = child.receive()
    reads = [(started, int(name.removeprefix("rev-"))) for started, name in report["reads"]]

    stale = [(started, seen, rev) for rev, at in enumerate(returned_at, start=1)
             for started, seen in reads if started > at and seen < rev]
    assert stale == []
    after_last = [seen for started, seen in reads if started > returned_at[-1]]
    assert after_last and set(after_last) == {20}
    assert report["l1_hits"] > len(returned_at)  # the loop really ran on warm L1 entries between updates
