"""Alembic to head, invoked synchronously by `make deploy` (infra/deploy.py) before the API is updated.

A Lambda rather than a command on the deploying machine: the database usually sits in private subnets that
only the functions reach. An exception here is a FunctionError for the caller, which stops the deploy.
"""

from __future__ import annotations

from typing import Any

from chalicelib.auth.secrets import load_database_url
from chalicelib.config import get_settings
from chalicelib.db.migrate import current_revisions, head_revisions, upgrade
from chalicelib.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    url = load_database_url(get_settings())
    before = current_revisions(url)
    upgrade(url)
    after = current_revisions(url)
    logger.info("database migrated", extra={"from": before, "to": after})
    return {"from": before, "revision": after, "heads": head_revisions()}
