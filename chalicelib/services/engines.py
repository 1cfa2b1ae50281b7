"""The engines over HTTP: list what is registered, run one synchronously for the caller.

The same engine a workflow step runs (chalicelib.workflows.control) with the same narrow EngineContext;
only the failures differ in kind: a step fails with the registry's step errors, the API answers 404/422.
"""

from __future__ import annotations

import uuid
from typing import Any

from chalicelib import errors
from chalicelib.config import Settings
from chalicelib.db.session import Database
from chalicelib.engines import EngineContext, registry


class EngineService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def describe_all(self) -> list[dict[str, Any]]:
        return [registry.get(name).describe() for name in registry.names()]

    def run(self, user_id: uuid.UUID, name: str, data: Any) -> dict[str, Any]:
        try:
            engine = registry.get(name)
        except registry.EngineNotFoundError as exc:
            raise errors.EngineUnknownError(exc.message, exc.details) from None
        ctx = EngineContext(user_id=user_id, transaction=self.db.transaction, settings=self.settings)
        try:
            return engine.run(ctx, registry.validate_input(engine, data))
        except registry.EngineInputInvalidError as exc:  # the schema's, or the engine's own refusal
            raise errors.EngineRequestInvalidError(exc.message, exc.details) from None
