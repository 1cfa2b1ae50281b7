"""A real Redis client that records its round trips, for tests that pin how many a code path costs.

Each round trip is recorded in `trips` as the tuple of command names it carried: ("MGET",) for a
plain command, ("HINCRBY", "HINCRBY") for a pipeline of two; `sent` keeps every plain command's
arguments. Nothing is faked: commands reach Redis.
"""

from __future__ import annotations

from typing import Any

import redis


class CountingPipeline(redis.client.Pipeline):  # type: ignore[misc]
    owner: CountingRedis

    def execute(self, raise_on_error: bool = True) -> Any:
        if self.command_stack:
            self.owner.trips.append(tuple(str(cmd[0][0]).upper() for cmd in self.command_stack))
        return super().execute(raise_on_error)


class CountingRedis(redis.Redis):  # type: ignore[misc]
    trips: list[tuple[str, ...]]
    sent: list[tuple[Any, ...]]

    @classmethod
    def connect(cls, url: str) -> CountingRedis:
        client: CountingRedis = cls.from_url(url)
        client.trips, client.sent = [], []
        return client

    def reset_counts(self) -> None:
        self.trips.clear()
        self.sent.clear()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.trips.append((str(args[0]).upper(),))
        self.sent.append(args)
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> CountingPipeline:
        pipe = CountingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.owner = self
        return pipe
