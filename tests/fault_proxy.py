"""A loopback TCP forwarder the fault tests can cut: the way to make Postgres or Redis "go away" for our code
without touching the shared servers (other people's tests use them).

`cut()` closes every forwarded connection and refuses new ones (connection refused, as when a server is down);
`stall()` is the nastier outage: connections are accepted and then never answered (a black-holed host);
`restore()` accepts and forwards again. The listening port stays the same, so the clients' URLs keep working.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._stalled = threading.Event()
        self._held: list[socket.socket] = []  # accepted while stalled: never answered
        self._listener: socket.socket | None = None
        self.port = self._listen(0)
        self.connections = 0  # forwarded connections accepted so far

    def _listen(self, port: int) -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return int(sock.getsockname()[1])

    def url_for(self, url: str) -> str:
        """`url` with its host:port replaced by this proxy's (e.g. a Postgres or Redis URL)."""
        host = f"{self.upstream[0]}:{self.upstream[1]}"
        assert host in url, (host, url)
        return url.replace(host, f"127.0.0.1:{self.port}", 1)

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def stall(self) -> None:
        """Drop every forwarded connection and answer nothing on new ones (they hang until the client gives up)."""
        self._stalled.set()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def restore(self) -> None:
        self._stalled.clear()
        with self._lock:
            held, self._held = self._held, []
            if self._listener is None:
                self._listen(self.port)
        for sock in held:
            sock.close()

    def close(self) -> None:
        self._stopped.set()
        self.cut()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed by cut()
            if self._stalled.is_set():
                with self._lock:
                    self._held.append(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        # The other side, or cut(), closing the connection simply ends the pipe.
        try:
            with contextlib.suppress(OSError):
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._conns.discard(sock)
                sock.close()
