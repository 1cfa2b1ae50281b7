"""`make run` as a subprocess for the end-to-end benchmarks (not a benchmark itself: run_all skips `_` files).

`Runtime`: `python -m infra.local --port N --state-dir <tmp>` on this machine's Postgres (the caller's throwaway
database) and Redis (its own key prefix), rate limits and quotas out of the way, bcrypt at its cheapest.
`signup()`: a fresh user's authenticated requests.Session. `rss_kb()`: VmRSS of a process and its descendants.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _harness

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
#: `make run` ports of these benchmarks: the API on PORT, the WebSocket gateway on PORT + 1 and + 2.
PORT = int(os.environ.get("BENCH_PORT", "8620"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Runtime:
    """`python -m infra.local` in its own process group, as `make run` starts it; stopped with Ctrl-C.
    `port` 0 takes a free one."""

    def __init__(self, database_url: str, prefix: str, port: int = PORT, **extra_env: str) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.state = tempfile.mkdtemp(prefix="ymera-bench-run-")
        env = {k: v for k, v in os.environ.items() if k not in {"AWS_ENDPOINT_URL", "YMERA_STAGE", "YMERA_JWT_SECRET"}}
        env.update({"DATABASE_URL": database_url, "REDIS_URL": _harness.REDIS_URL, "YMERA_REDIS_KEY_PREFIX": prefix,
                    "YMERA_BCRYPT_ROUNDS": "4", "YMERA_QUOTA_TASKS_PER_USER_PER_DAY": str(10**7),
                    "YMERA_LOG_LEVEL": "WARNING", "POWERTOOLS_LOG_LEVEL": "WARNING",
                    **{f"YMERA_RATE_LIMIT_{b}_CAPACITY": str(10**9) for b in ("USER", "IP", "LOGIN_ACCOUNT",
                                                                              "LOGIN_IP", "LOGIN_ACCOUNT_IP")},
                    **extra_env})
        self.log = open(Path(self.state) / "runtime.log", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "infra.local", "--port", str(self.port), "--state-dir",
                                      str(Path(self.state) / "s")], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 90) -> float:
        """Until `/health` answers and the runtime has logged that it is ready; the seconds that took."""
        import requests

        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"make run exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if requests.get(f"{self.base}/health", timeout=2).status_code == 200:
                    self.log.seek(0)
                    if "local runtime ready" in self.log.read():
                        return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"make run not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> float:
        """Ctrl-C to the whole group (as a terminal sends it); the seconds it took to stop."""
        started = time.monotonic()
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.log.close()
            shutil.rmtree(self.state, ignore_errors=True)
        return time.monotonic() - started


def signup(base: str) -> Any:
    import requests

    s, name = requests.Session(), f"b{uuid.uuid4().hex[:10]}"
    s.post(f"{base}/auth/register", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
           timeout=10).raise_for_status()
    token = s.post(f"{base}/auth/login", json={"username": name, "password": PASSWORD}, timeout=10).json()[
        "access_token"]
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
        for kid in kids:
            found += [kid, *descendants(kid)]
    return found


def rss_kb(pid: int) -> dict[int, int]:
    """VmRSS (kB) of `pid` and of every process under it, by pid."""
    out: dict[int, int] = {}
    for p in (pid, *descendants(pid)):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[p] = int(line.split()[1])
        except FileNotFoundError:
            continue
    return out


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
    except FileNotFoundError:
        return "?"
