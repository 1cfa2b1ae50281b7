"""A real Redis client that records its round trips, for tests that pin how many a code path costs.

Each round trip is recorded in `trips` as the tuple of command names it carried: ("MGET",) for a
plain command, ("HINCRBY", "HINCRBY") for a pipeline of two, ("CONNECT",) for a connection a caller that
packs its own commands could not open (`CountingConnection`); `sent` keeps every plain command's
arguments (those a caller packed itself, as text). Nothing is faked: commands reach Redis.
"""

from __future__ import annotations

import threading
from typing import Any

import redis


def packed_args(command: Any) -> list[bytes]:
    """The arguments of one packed RESP command (an array of bulk strings, as redis-py and the rate
    limiter pack them), from the chunks handed to `send_packed_command`."""
    data = command.encode() if isinstance(command, str) else b"".join(command)
    assert data[:1] == b"*", data[:40]
    count, _, rest = data[1:].partition(b"\r\n")
    args = []
    for _ in range(int(count)):
        assert rest[:1] == b"$", rest[:40]
        size, _, rest = rest[1:].partition(b"\r\n")
        args.append(rest[:int(size)])
        rest = rest[int(size) + 2:]
    assert rest == b"", "one command per send"
    return args


class CountingConnection(redis.Connection):  # type: ignore[misc]
    """Records a command sent on the connection by a caller that packs its own commands (the rate
    limiter's EVALSHA), which `execute_command` never sees. Not: commands of `execute_command` and
    pipelines (recorded there), the handshake that opens the connection, a
    retry of the same packed command (one round trip that had to be sent again)."""

    owner: CountingRedis

    def send_packed_command(self, command: Any, check_health: bool = True) -> Any:
        state = self.owner.state
        if not state.inside and not getattr(state, "depth", 0) and command is not getattr(state, "last", None):
            state.last = command
            args = tuple(arg.decode(errors="backslashreplace") for arg in packed_args(command))
            self.owner.trips.append((args[0].upper(),))
            self.owner.sent.append(args)
        state.depth = getattr(state, "depth", 0) + 1
        try:
            return super().send_packed_command(command, check_health)
        finally:
            state.depth -= 1

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        """A connection that cannot be opened for such a caller is its attempt: recorded as ("CONNECT",)."""
        try:
            super().connect_check_health(check_health, retry_socket_connect)
        except redis.ConnectionError:
            state = self.owner.state
            if not state.inside and not getattr(state, "depth", 0):
                self.owner.trips.append(("CONNECT",))
            raise

    def on_connect_check_health(self, check_health: bool = True) -> None:
        state = self.owner.state  # the handshake (HELLO, SELECT, ...) a new connection sends is no round trip
        state.depth = getattr(state, "depth", 0) + 1
        try:
            super().on_connect_check_health(check_health)
        finally:
            state.depth -= 1


class _State(threading.local):
    inside = False  # in execute_command or a pipeline's execute: recorded there


class CountingPipeline(redis.client.Pipeline):  # type: ignore[misc]
    owner: CountingRedis

    def execute(self, raise_on_error: bool = True) -> Any:
        if self.command_stack:
            self.owner.trips.append(tuple(str(cmd[0][0]).upper() for cmd in self.command_stack))
        state = self.owner.state
        state.inside, outer = True, state.inside
        try:
            return super().execute(raise_on_error)
        finally:
            state.inside = outer


class CountingRedis(redis.Redis):  # type: ignore[misc]
    trips: list[tuple[str, ...]]
    sent: list[tuple[Any, ...]]
    state: _State

    @classmethod
    def connect(cls, url: str) -> CountingRedis:
        connection = type("BoundCountingConnection", (CountingConnection,), {})
        client: CountingRedis = cls.from_url(url, connection_class=connection)
        connection.owner = client
        client.trips, client.sent, client.state = [], [], _State()
        return client

    def reset_counts(self) -> None:
        self.trips.clear()
        self.sent.clear()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.trips.append((str(args[0]).upper(),))
        self.sent.append(args)
        state = self.state
        state.inside, outer = True, state.inside
        try:
            return super().execute_command(*args, **options)
        finally:
            state.inside = outer

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> CountingPipeline:
        pipe = CountingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.owner = self
        return pipe
