"""Outbound HTTP to hosts a user chose: address checks on the connected socket, and a total deadline.

Used for language-model endpoints a user brings (chalicelib.providers) and webhooks (chalicelib.webhooks).
Two rules:

- **Where**: `https` only unless the policy allows plain http (development stages). The host is
  resolved once, every address is checked, and the connection is made to the checked address itself
  — the name is never resolved again, so DNS rebinding (a second answer pointing at 127.0.0.1)
  cannot slip past. The connected socket's peer address is checked again before a byte is sent.
  Always refused: unspecified, multicast, reserved and the cloud metadata addresses
  (169.254.169.254, fd00:ec2::254). Refused unless `allow_private`: loopback, RFC 1918 / ULA private,
  link-local and CGNAT (100.64.0.0/10) — the ranges self-hosted models live in.
- **How long**: `timeout` is the whole exchange (connect, send, headers, body), not one socket
  operation: a watchdog shuts the socket down at the deadline, so a server dripping one byte a second
  cannot stretch a 2 s limit. Bodies are read in chunks up to `max_bytes`.

Redirects are never followed (http.client does not): the caller sees the 3xx.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from chalicelib.errors import AppError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
Connector = Callable[[tuple[str, int], float], socket.socket]

METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
CGNAT = ipaddress.ip_network("100.64.0.0/10")
CHUNK = 64 * 1024


class OutboundRefusedError(AppError):
    """The destination is not one we may connect to (scheme, or an address in a refused range)."""

    code = "OUTBOUND_REFUSED"


class OutboundTimeoutError(AppError):
    """The whole exchange did not finish within its deadline."""

    code = "OUTBOUND_TIMEOUT"


class OutboundConnectionError(AppError):
    """Name resolution, connection or the HTTP exchange itself failed."""

    code = "OUTBOUND_CONNECTION_FAILED"


class OutboundTooLargeError(AppError):
    code = "OUTBOUND_RESPONSE_TOO_LARGE"


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _system_connector(address: tuple[str, int], timeout: float) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def classify(ip: IPAddress) -> str | None:
    """Why an address is refused ("metadata", "private"...), or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        return "metadata"
    if ip.is_loopback:  # before "reserved": ::1 sits in the reserved ::/8
        return "loopback"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "reserved"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT:
        return "cgnat"
    if ip.is_private or not ip.is_global:
        return "private"
    return None


#: reasons `allow_private` lifts; the others are never allowed.
PRIVATE_REASONS = frozenset({"loopback", "link-local", "cgnat", "private"})


@dataclass(frozen=True)
class OutboundPolicy:
    allow_private: bool = False
    allow_http: bool = False
    resolver: Resolver = field(default=_system_resolver, repr=False)
    connector: Connector = field(default=_system_connector, repr=False)

    def check_url(self, url: str) -> tuple[str, str, int]:
        """(scheme, host, port) of an allowed URL; raises OutboundRefusedError for a refused scheme."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise OutboundRefusedError("only http(s) URLs with a host are allowed", {"reason": "scheme"})
        if parts.scheme == "http" and not self.allow_http:
            raise OutboundRefusedError("only https endpoints are allowed on this stage", {"reason": "scheme"})
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise OutboundRefusedError("the URL's port is not valid", {"reason": "port"}) from exc
        return parts.scheme, parts.hostname, port

    def check_destination(self, url: str) -> tuple[str, str, int]:
        """At configuration time (a webhook's URL): the scheme, and every address the host resolves to now.

        Stricter than `connect`, which skips a refused address and tries the next: a name with any refused
        answer is refused here. Connecting checks again (the answer may change: DNS rebinding)."""
        scheme, host, port = self.check_url(url)
        try:
            addresses = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:  # UnicodeError: not a valid host name ("a..b", a label over 63)
            raise OutboundRefusedError("the URL's host name does not resolve", {"reason": "dns"}) from exc
        if not addresses:
            raise OutboundRefusedError("the URL's host name does not resolve", {"reason": "dns"})
        for address in addresses:
            self.check_address(address)
        return scheme, host, port

    def check_address(self, address: str) -> None:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError as exc:
            raise OutboundRefusedError("the endpoint's address is not an IP address", {"reason": "address"}) from exc
        reason = classify(ip)
        if reason is not None and not (self.allow_private and reason in PRIVATE_REASONS):
            raise OutboundRefusedError(f"the endpoint resolves to a {reason} address, which is not allowed",
                                       {"reason": reason})

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A socket connected to a checked address of `host` (resolved exactly once)."""
        try:
            addresses = self.resolver(host, port)
        except OSError as exc:
            raise OutboundConnectionError("the endpoint's host name does not resolve", {"reason": "dns"}) from exc
        if not addresses:
            raise OutboundConnectionError("the endpoint's host name does not resolve", {"reason": "dns"})
        refused: OutboundRefusedError | None = None
        failure: OSError | None = None
        for address in addresses:
            try:
                self.check_address(address)
            except OutboundRefusedError as exc:
                refused = exc
                continue
            try:
                sock = self.connector((address, port), timeout)
            except OSError as exc:
                failure = exc
                continue
            try:
                self.check_address(str(sock.getpeername()[0]))  # what we are really talking to
            except OutboundRefusedError:
                sock.close()
                raise
            return sock
        if failure is not None:
            if isinstance(failure, TimeoutError):
                raise OutboundTimeoutError("connecting to the endpoint timed out", {}) from failure
            raise OutboundConnectionError("cannot connect to the endpoint", {"reason": type(failure).__name__}
                                          ) from failure
        assert refused is not None
        raise refused


TRUSTED = OutboundPolicy(allow_private=True, allow_http=True)


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float, max_bytes: int,
         policy: OutboundPolicy | None = None, clock: Callable[[], float] = time.monotonic,
         truncate: bool = False) -> Response:
    """POST `body` to `url` and read the answer, all within `timeout` seconds.

    `policy` None means a trusted destination (an operator's endpoint): no address checks, but the
    same total deadline. An answer over `max_bytes` raises OutboundTooLargeError, or with `truncate` is
    cut there (webhooks: only the status matters; the rest is not read).
    """
    guard = policy or TRUSTED
    scheme, host, port = guard.check_url(url)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = clock() + timeout
    conn_cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn: Any = conn_cls(host, port, timeout=timeout)
    if policy is not None:
        conn._create_connection = lambda address, t, source=None: guard.connect(address[0], address[1], t)
    expired = threading.Event()

    def _expire() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the exchange is over either way

    watchdog = threading.Timer(timeout, _expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", target, body=body, headers=dict(headers))
        response = conn.getresponse()
        data = _read(response, conn, deadline, max_bytes, clock, truncate)
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    except (OutboundRefusedError, OutboundTooLargeError):
        raise
    except (OutboundTimeoutError, OutboundConnectionError):
        if expired.is_set():
            raise OutboundTimeoutError(f"the endpoint did not answer within {timeout:.3g} s", {}) from None
        raise
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError) or clock() >= deadline:
            raise OutboundTimeoutError(f"the endpoint did not answer within {timeout:.3g} s", {}) from exc
        raise OutboundConnectionError("the connection to the endpoint failed", {"reason": type(exc).__name__}
                                      ) from exc
    finally:
        watchdog.cancel()
        conn.close()


def _read(response: http.client.HTTPResponse, conn: Any, deadline: float, max_bytes: int,
          clock: Callable[[], float], truncate: bool = False) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError("deadline")
        if conn.sock is not None:
            conn.sock.settimeout(remaining)
        chunk = response.read1(CHUNK) if hasattr(response, "read1") else response.read(CHUNK)
        if not chunk:
            if clock() >= deadline:
                raise TimeoutError("deadline")  # the watchdog closed the socket: not a complete answer
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            if truncate:
                chunks.append(chunk)
                return b"".join(chunks)[:max_bytes]
            raise OutboundTooLargeError(f"the answer is larger than {max_bytes} bytes", {})
        chunks.append(chunk)
