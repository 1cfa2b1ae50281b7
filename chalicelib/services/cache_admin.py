"""POST /admin/cache/clear: bump namespace versions so every process's L1 and the shared L2 miss."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.db.session import Database
from chalicelib.domain import rbac
from chalicelib.domain.rbac import Permission
from chalicelib.errors import ValidationError
from chalicelib.services import audit
from chalicelib.services.meta import RequestMeta

if TYPE_CHECKING:
    from chalicelib.auth.tokens import Claims
    from chalicelib.cache.twolevel import TwoLevelCache


class CacheAdminService:
    def __init__(self, db: Database, cache: TwoLevelCache) -> None:
        self.db = db
        self.cache = cache

    def clear(self, actor: Claims, namespaces: list[str] | None, meta: RequestMeta) -> list[str]:
        """Clear the given namespaces (all when None). Redis unreachable: 503 and no audit row."""
        rbac.require(actor.role, Permission.CACHE_CLEAR)
        available = list(self.cache.namespaces)
        unknown = [name for name in namespaces or [] if name not in available]
        if unknown:
            raise ValidationError("unknown cache namespace", {"field": "namespaces", "unknown": unknown,
                                                              "available": available})
        if namespaces == []:
            raise ValidationError("namespaces is empty; omit it to clear every namespace", {"field": "namespaces"})
        with self.db.transaction() as session:
            # Cleared inside the transaction: if Redis refuses, the audit row is rolled back with it.
            cleared = self.cache.clear(namespaces)
            audit.record(session, user_id=actor.user_id, event_type="admin.cache_cleared", action="clear",
                         resource_type="cache", details={"namespaces": cleared}, meta=meta)
        return cleared
