"""Postgres unreachable for 10 s, then Redis for 10 s, then a consumer crash, while tasks are created through the
API and processed from the (moto) queue: the API never answers a 5xx other than 503 DEPENDENCY_UNAVAILABLE, and
afterwards every task reaches a terminal state with at most one result (tests/fault_scenario.py; the 1,000-task
version is bench/fault_load.py). YMERA_FAULT_OUTAGE_SECONDS and YMERA_FAULT_LOAD_TASKS shorten it."""

from __future__ import annotations

import os
from typing import Any

from tests.fault_scenario import run_scenario
from tests.integration.conftest import PREFIX, Api
from tests.integration.faults_support import OUTAGE_SECONDS, Faulty

TASKS = int(os.environ.get("YMERA_FAULT_LOAD_TASKS", "200"))


def test_tasks_created_and_processed_through_outages_all_finish_once(faulty: Faulty, faulty_client: Any,
                                                                     aws: Any) -> None:
    figures = run_scenario(Api(faulty_client), faulty.container, aws, faulty.pg, faulty.redis, faulty.direct,
                           tasks=TASKS, outage_seconds=OUTAGE_SECONDS, prefix=PREFIX)
    print(figures.line())
    assert figures.submitted == TASKS
    assert figures.http_5xx == 0, figures.statuses
    assert figures.http_503 > 0  # the outage was seen, and answered in the envelope
    assert figures.crashes == 1
    assert figures.lost == 0, figures.line()
    assert figures.duplicated == 0
    assert figures.completed == figures.in_database >= TASKS  # validation tasks of this shape all complete
