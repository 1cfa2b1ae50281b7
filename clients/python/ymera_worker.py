"""YMERA worker library: run an external agent anywhere. Standard library only (Python 3.10+).

    from ymera_worker import Worker, TaskFailed

    def handle(task):                       # task: the leased task as a dict (id, input_data, attempts...)
        if "text" not in task["input_data"]:
            raise TaskFailed("NO_TEXT", "input_data.text is required")   # the task fails with this code
        return {"words": len(task["input_data"]["text"].split())}       # output_data (or a Result)

    Worker("https://api.example.com", AGENT_ID, API_KEY).run(handle)

The loop: lease (long polling) -> handler(task) -> complete or fail. While a task runs, a
background thread heartbeats so the lease does not expire. `stop()` (or SIGINT/SIGTERM in the
example) finishes the task in hand, reports it, and returns from `run()`.

Failures: `TaskFailed` fails the task with its code (retryable=True puts it back in the queue
while attempts remain); any other exception is reported as retryable WORKER_EXCEPTION. Network
errors, 5xx and 429 are retried with backoff; a 401 (wrong key) stops the worker with AuthError.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApiError", "AuthError", "Result", "TaskFailed", "Worker"]

log = logging.getLogger("ymera_worker")

Task = dict[str, Any]


@dataclass
class Result:
    """What a handler may return instead of a plain output dict: output plus its own metrics."""

    output: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


class TaskFailed(Exception):
    """Raise from a handler to fail the task with a stable code the task's owner will see."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None,
                 retryable: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.details, self.retryable = code, message, details or {}, retryable


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or {}
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status in (0, 429) or self.status >= 500


class AuthError(ApiError):
    """The agent id or key was refused: retrying cannot help."""


Handler = Callable[[Task], dict[str, Any] | Result]


class Worker:
    def __init__(self, base_url: str, agent_id: str, api_key: str, *, max_tasks: int = 1,
                 wait_seconds: float = 20, heartbeat_seconds: float | None = None,
                 report_attempts: int = 5, max_backoff: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.agent_id = agent_id
        self.api_key = api_key
        self.max_tasks = max_tasks
        self.wait_seconds = wait_seconds
        #: default: a third of the server's lease, so two heartbeats may be lost before it expires.
        self.heartbeat_seconds = heartbeat_seconds
        self.report_attempts = report_attempts
        self.max_backoff = max_backoff
        self.processed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._lease_seconds = 60.0

    # -- public -----------------------------------------------------------------------------------

    def run(self, handler: Handler, *, max_tasks_total: int | None = None) -> int:
        """Lease and handle tasks until `stop()` (or `max_tasks_total` handled). Returns how many."""
        beat = threading.Thread(target=self._heartbeat_loop, name="ymera-heartbeat", daemon=True)
        beat.start()
        failures = 0
        try:
            while not self._stop.is_set():
                if max_tasks_total is not None and self.processed >= max_tasks_total:
                    break
                try:
                    self.run_once(handler)
                    failures = 0
                except AuthError:
                    raise
                except ApiError as exc:
                    failures += 1
                    delay = exc.retry_after or self._backoff(failures)
                    log.warning("lease failed (%s); retrying in %.1fs", exc, delay)
                    self._stop.wait(delay)
        finally:
            self._stop.set()
            beat.join(timeout=5)
        return self.processed

    def run_once(self, handler: Handler) -> int:
        """One lease (long polling up to wait_seconds) and every task it returned. Returns how many."""
        leased = self._call("POST", f"/agents/{self.agent_id}/lease",
                            {"max_tasks": self.max_tasks, "wait_seconds": self.wait_seconds},
                            timeout=self.wait_seconds + 15)
        self._lease_seconds = float(leased.get("lease_seconds") or self._lease_seconds)
        tasks = leased.get("tasks") or []
        with self._lock:
            self._in_flight.update(t["id"] for t in tasks)
        for task in tasks:
            try:
                self._handle(handler, task)
            finally:
                with self._lock:
                    self._in_flight.discard(task["id"])
                self.processed += 1
        return len(tasks)

    def stop(self) -> None:
        """Finish the task in hand, report it, then return from run() (after the current poll, at most)."""
        self._stop.set()

    # -- internals --------------------------------------------------------------------------------

    def _handle(self, handler: Handler, task: Task) -> None:
        started = time.perf_counter()
        try:
            result = handler(task)
        except TaskFailed as exc:
            self._report(task, "fail", {"error": {"code": exc.code, "message": exc.message, "details": exc.details},
                                        "retryable": exc.retryable})
            return
        except Exception as exc:  # noqa: BLE001 - a handler bug: reported, and retried while attempts remain
            log.exception("handler raised on task %s", task["id"])
            self._report(task, "fail", {"error": {"code": "WORKER_EXCEPTION",
                                                  "message": f"{type(exc).__name__}: {exc}"[:2000]},
                                        "retryable": True})
            return
        if not isinstance(result, Result):
            result = Result(output=dict(result or {}))
        metrics = {"duration_ms": round((time.perf_counter() - started) * 1000, 3), **result.metrics}
        self._report(task, "complete", {"output_data": result.output, "metrics": metrics})

    def _report(self, task: Task, verb: str, body: dict[str, Any]) -> None:
        body["attempt"] = task.get("attempts")
        for attempt in range(1, self.report_attempts + 1):
            try:
                self._call("POST", f"/tasks/{task['id']}/{verb}", body, agent_header=True)
                return
            except ApiError as exc:
                if not exc.transient or attempt == self.report_attempts:
                    # 404/409: the task was cancelled or taken back (its lease expired); nothing to retry.
                    log.warning("could not %s task %s: %s", verb, task["id"], exc)
                    return
                time.sleep(exc.retry_after or self._backoff(attempt))

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds or max(1.0, self._lease_seconds / 3)):
            with self._lock:
                holding = set(self._in_flight)
            if not holding:
                continue  # idle: the lease calls themselves count as signs of life
            try:
                answer = self._call("POST", f"/agents/{self.agent_id}/heartbeat", None)
            except ApiError as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            lost = holding - {t["task_id"] for t in answer.get("tasks") or []}
            if lost:
                log.warning("no longer holding %s (cancelled or lease expired)", sorted(lost))

    def _backoff(self, failures: int) -> float:
        return float(min(self.max_backoff, 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0))  # noqa: S311 - jitter

    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, timeout: float = 30,
              agent_header: bool = False) -> dict[str, Any]:
        headers = {"X-Agent-Key": self.api_key, "Accept": "application/json"}
        if agent_header:
            headers["X-Agent-Id"] = self.agent_id
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - caller's URL
                raw = response.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:  # unreachable, reset, timeout, bad JSON
            raise ApiError(0, "NETWORK_ERROR", str(exc)) from None


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    try:
        error = json.loads(exc.read() or b"{}").get("error") or {}
    except ValueError:
        error = {}
    retry_after = exc.headers.get("Retry-After") if exc.headers else None
    cls = AuthError if exc.code == 401 else ApiError
    return cls(exc.code, str(error.get("code", "HTTP_ERROR")), str(error.get("message", exc.reason)),
               error.get("details") or {}, float(retry_after) if retry_after and retry_after.isdigit() else None)
