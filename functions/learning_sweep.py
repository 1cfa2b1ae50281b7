"""Scheduled learning sweep (every 5 minutes): counts every rating nobody has counted yet into
its agent's quality estimate. Ratings of users without a learning agent are counted here;
so are those whose learning task failed. Folding is idempotent (processed_at, row locks).
"""

from __future__ import annotations

from typing import Any

from chalicelib.container import get_container
from chalicelib.engines.learning import sweep
from chalicelib.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return sweep(get_container())
