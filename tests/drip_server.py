"""A loopback HTTP server that answers slowly on purpose: one byte every `interval` seconds.

urllib's timeout applies to each socket operation, so a server that keeps sending a byte before
each timeout runs out holds the client for as long as it likes; the tests use this one to prove
that a call's deadline is total.
"""

from __future__ import annotations

import socket
import threading
import time


class DripServer:
    def __init__(self, *, interval: float = 0.1, body_bytes: int = 100, drip_headers: bool = False) -> None:
        self.interval = interval
        self.body_bytes = body_bytes
        self.drip_headers = drip_headers
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    def __enter__(self) -> DripServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {self.body_bytes}\r\n\r\n").encode()
                if self.drip_headers:
                    self._drip(conn, head)
                else:
                    conn.sendall(head)
                self._drip(conn, b" " * self.body_bytes)
            except OSError:
                return  # the client hung up: that is the point

    def _drip(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self._stop.wait(self.interval):
                return
            conn.sendall(data[i:i + 1])
        time.sleep(0)
