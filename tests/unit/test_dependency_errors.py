"""The one mapping from a lost dependency to 503 (chalicelib.api.http.dependency_unavailable): what counts."""

from __future__ import annotations

import pytest
import redis.exceptions
from sqlalchemy import exc as sa

from chalicelib.api.http import dependency_unavailable, to_response


@pytest.mark.parametrize(("error", "dependency"), [
    (sa.OperationalError("SELECT 1", {}, Exception("connection refused")), "database"),
    (sa.InterfaceError("SELECT 1", {}, Exception("connection already closed")), "database"),
    (sa.DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True),
     "database"),
    (sa.TimeoutError("QueuePool limit of size 5 overflow 5 reached"), "database"),
    (redis.exceptions.ConnectionError("Connection refused"), "redis"),
    (redis.exceptions.TimeoutError("Timeout reading from socket"), "redis"),
])
def test_lost_connections_are_503_with_retry_after(error: Exception, dependency: str) -> None:
    unavailable = dependency_unavailable(error)
    assert unavailable is not None and unavailable.details == {"dependency": dependency}
    response = to_response(unavailable)
    assert response.status_code == 503 and response.body["error"]["code"] == "DEPENDENCY_UNAVAILABLE"
    assert response.headers["Retry-After"] == "5"


@pytest.mark.parametrize("error", [
    ValueError("a bug"), sa.IntegrityError("INSERT", {}, Exception("duplicate key")),
    sa.ProgrammingError("SELECT nope", {}, Exception("syntax error")), redis.exceptions.ResponseError("WRONGTYPE"),
])
def test_everything_else_stays_a_bug(error: Exception) -> None:
    assert dependency_unavailable(error) is None
