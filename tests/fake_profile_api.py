"""A fake profile API on a real loopback socket, speaking just enough HTTP/1.1, that can be
switched into a fault: the failures a real upstream shows, below what a mock transport can.

Each connection answers one request and closes (`Connection: close`), so every lookup opens
a new connection and a fault switched on counts from the next lookup.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

Fault = Literal[
    "healthy",
    "slow",  # the right answer, later than any request's budget
    "hang",  # reads the request, never answers
    "status_500",
    "garbage",  # bytes that are not HTTP at all, then close
    "invalid_utf8",  # 200, JSON whose strings hold bytes that are not UTF-8
    "wrong_types",  # 200, JSON of the wrong shape for every lookup
    "not_json",  # 200, an HTML error page
    "huge",  # 200, a body of many megabytes
    "refused",  # the port is closed: connecting is refused
    "reset",  # reads the request, then resets the connection (RST)
]
FAULTS: tuple[Fault, ...] = (
    "slow",
    "hang",
    "status_500",
    "garbage",
    "invalid_utf8",
    "wrong_types",
    "not_json",
    "huge",
    "refused",
    "reset",
)
SLOW_SECONDS = 0.3
HUGE_BYTES = 8 * 1024 * 1024
GARBAGE = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\xff\xfe not HTTP\r\n\r\n"


class FakeProfileApi:
    """Serves `routes` (path -> JSON body; any other path is a 404) on 127.0.0.1 until
    closed; `fault` switches what every new request gets. `paths` records the paths asked."""

    def __init__(self, routes: Mapping[str, bytes]) -> None:
        self.routes = dict(routes)
        self.fault: Fault = "healthy"
        self.paths: list[str] = []
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def set(self, fault: Fault) -> None:
        """From the next request on, answer with `fault`. "refused" closes the port."""
        self.fault = fault
        if fault == "refused":
            self._listener.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed: "refused", or the end
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()  # before it is listed: close() must never join an unstarted one
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            path = _read_request(conn)
            if path is None:
                return
            self.paths.append(path)
            fault = self.fault
            try:
                if fault == "refused":
                    return  # accepted just before the port closed: closed unanswered
                if fault == "hang":
                    self._closed.wait()
                elif fault == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif fault == "garbage":
                    conn.sendall(GARBAGE)
                elif fault == "huge":
                    _respond_huge(conn)
                else:
                    if fault == "slow" and self._closed.wait(SLOW_SECONDS):
                        return
                    status, body = self._answer(path, fault)
                    _respond(conn, status, body)
            except OSError:
                pass  # the client gave up first

    def _answer(self, path: str, fault: Fault) -> tuple[int, bytes]:
        if path == "/healthz":
            return (200, b"{}") if fault in ("healthy", "slow") else (503, b"")
        if fault == "status_500":
            return 500, b'{"error": "internal"}'
        body = self.routes.get(path)
        if fault in {"healthy", "slow"}:
            return (200, body) if body is not None else (404, b'{"error": "not found"}')
        # a broken upstream sends its broken 200 for known and unknown ids alike
        body = body or b'{"id":"","visitor_id":""}'
        if fault == "invalid_utf8":
            return 200, body.replace(b'"id":"', b'"id":"\xff\xfe', 1).replace(
                b'"visitor_id":"', b'"visitor_id":"\xc3\x28', 1
            )
        if fault == "wrong_types":
            return 200, b'{"id": 7, "visitor_id": ["v"], "flags": "vip", "traits": []}'
        assert fault == "not_json"
        return 200, b"<html><body>502 Bad Gateway</body></html>"


def _read_request(conn: socket.socket) -> str | None:
    """The path of one request (headers only: the API is asked only GETs)."""
    conn.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return None
            data += chunk
    except OSError:
        return None
    parts = data.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].decode("latin-1") if len(parts) == 3 else None


def _respond(conn: socket.socket, status: int, body: bytes) -> None:
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    conn.sendall(head.encode() + body)


def _respond_huge(conn: socket.socket) -> None:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {HUGE_BYTES}\r\nConnection: close\r\n\r\n"
    )
    conn.sendall(head.encode() + b'{"id": "v-huge", "traits": {"pad": "')
    chunk = b"x" * 65536
    for _ in range(HUGE_BYTES // len(chunk) - 1):
        conn.sendall(chunk)


@contextmanager
def fake_profile_api(routes: Mapping[str, bytes]) -> Iterator[FakeProfileApi]:
    api = FakeProfileApi(routes)
    try:
        yield api
    finally:
        api.close()
