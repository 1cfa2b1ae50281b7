"""Best-effort calls that follow a commit, made off the consumer's critical path (docs/consumers.md, "Cost per task").

The consumer tells Redis a task finished (`events.live.TaskWake`, the long-poll wake-up hint) right after its
outcome committed. Made inline, that PUBLISH was a network round trip per task the next record waited for:
~0.3 ms on a quiet machine, 1.3 ms on a loaded one, a sixth of a validation task's wall time. Here the call
is queued and made at once by one background thread, in order; the consumer goes on to its next record
while Redis answers. Nothing is cached or skipped: every hint is still sent, as soon as before, and only
after its commit (it is queued after it). `flush()` waits until every queued call ran: the handler calls it
before it returns, so a frozen Lambda never holds an unsent hint, and an invocation never takes longer than
the inline calls would have.

Only for calls that never need to be waited on and whose failure is not the task's (they log and carry on).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from chalicelib.observability import logger

Call = tuple[Callable[..., Any], tuple[Any, ...]]


class AfterCommit:
    """One daemon thread making queued calls in order; started on first use (and again in a forked child)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Call] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._ensure_worker()
        self._queue.put((fn, args))

    def flush(self) -> None:
        """Wait until every call submitted so far has been made."""
        if self._thread is not None and self._pid == os.getpid():
            self._queue.join()

    def _ensure_worker(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # a fork keeps the object, not the thread
                self._queue = queue.Queue()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._work, name="ymera-after-commit", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            fn, args = self._queue.get()
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a best-effort call: logged, the next one still runs
                logger.warning("a call after a commit failed", exc_info=True)
            finally:
                self._queue.task_done()
