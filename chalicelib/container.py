"""Composition root: builds each real adapter lazily, once per container (Lambda
or process). Entry points ask for services here; tests build a Container with
their own settings or adapters instead of patching."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from chalicelib.config import Settings, get_settings

if TYPE_CHECKING:
    from chalicelib.auth.passwords import PasswordHasher
    from chalicelib.auth.tokens import TokenService
    from chalicelib.db.session import Database
    from chalicelib.messaging.sqs import Publisher
    from chalicelib.services.agents import AgentService
    from chalicelib.services.health import HealthService
    from chalicelib.services.outbox import OutboxRelay
    from chalicelib.services.processing import TaskProcessor
    from chalicelib.services.tasks import TaskService
    from chalicelib.services.users import UserService


class Container:
    def __init__(self, settings: Settings, *, database: Database | None = None,
                 publisher: Publisher | None = None, redis_client: Any = None) -> None:
        self.settings = settings
        if database is not None:
            self.__dict__["db"] = database
        if publisher is not None:
            self.__dict__["publisher"] = publisher
        if redis_client is not None:
            self.__dict__["redis"] = redis_client

    @cached_property
    def db(self) -> Database:
        from chalicelib.db.session import Database, make_engine

        s = self.settings
        return Database(make_engine(s.database_url, pool_size=s.db_pool_size, max_overflow=s.db_max_overflow,
                                    pool_timeout=s.db_pool_timeout, pool_recycle=s.db_pool_recycle))

    @cached_property
    def redis(self) -> Any:
        """A Redis client, or None when REDIS_URL is unset (features that need it degrade)."""
        if not self.settings.redis_url:
            return None
        import redis

        return redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)

    @cached_property
    def publisher(self) -> Publisher:
        from chalicelib.messaging.sqs import SqsPublisher, make_sqs_client

        s = self.settings
        return SqsPublisher(lambda: make_sqs_client(s.aws_region, s.aws_endpoint_url, s.publish_timeout_seconds),
                            s.queue_prefix)

    @cached_property
    def hasher(self) -> PasswordHasher:
        from chalicelib.auth.passwords import PasswordHasher

        return PasswordHasher(self.settings.bcrypt_rounds)

    @cached_property
    def tokens(self) -> TokenService:
        from chalicelib.auth.tokens import TokenService

        s = self.settings
        return TokenService(s.jwt_secret, issuer=s.jwt_issuer, audience=s.jwt_audience,
                            access_ttl=s.access_token_ttl_seconds, refresh_ttl=s.refresh_token_ttl_seconds,
                            algorithm=s.jwt_algorithm)

    @cached_property
    def relay(self) -> OutboxRelay:
        from chalicelib.services.outbox import OutboxRelay

        return OutboxRelay(self.db, self.publisher)

    @cached_property
    def users(self) -> UserService:
        from chalicelib.services.users import UserService

        return UserService(self.db, self.hasher, self.tokens)

    @cached_property
    def agents(self) -> AgentService:
        from chalicelib.services.agents import AgentService

        return AgentService(self.db)

    @cached_property
    def tasks(self) -> TaskService:
        from chalicelib.services.tasks import TaskService

        return TaskService(self.db, after_commit=self.relay.publish_one)

    @cached_property
    def processor(self) -> TaskProcessor:
        from chalicelib.services.processing import TaskProcessor

        return TaskProcessor(max_attempts=self.settings.max_task_attempts, container=self)

    @cached_property
    def health(self) -> HealthService:
        from chalicelib.services.health import HealthService

        return HealthService(self.db, lambda: self.redis, self.publisher, self.settings)


_container: Container | None = None


def get_container() -> Container:
    global _container
    if _container is None:
        _container = Container(get_settings())
    return _container


def set_container(container: Container | None) -> None:
    """Install a container (tests, the local runtime); None resets to lazy defaults."""
    global _container
    _container = container
