"""A fake profile API on a real loopback socket, speaking just enough HTTP/1.1, that can be
switched into a fault: the failures a real upstream shows, below what a mock transport can.

It answers the README's contract: the GETs from `routes`, and `POST /resolve` built from
the same answers (`resolve_answer`), so the two modes see one upstream. By default each
connection answers one request and closes (`Connection: close`), so every lookup opens a new
connection and a fault switched on counts from the next lookup; `keep_alive` serves many
requests a connection, as a real API behind a pooling client does (the benchmarks), and
`latency` delays every healthy answer.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

import msgspec

from decider.profile import ALIAS_KINDS, AccountProfile, VisitorProfile
from decider.profiles.sources.http import segment

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
MAX_REQUEST = 64 * 1024


Routes = Mapping[str, bytes] | Callable[[str], bytes | None]


class FakeProfileApi:
    """Serves `routes` (path -> JSON body, a mapping or a function; any other path is a 404)
    and `POST /resolve` on 127.0.0.1 until closed; `fault` switches what every new request
    gets. `paths` records the paths asked, `asked` the bodies of the resolve requests."""

    def __init__(self, routes: Routes, *, keep_alive: bool = False, latency: float = 0.0) -> None:
        self.get = routes.get if isinstance(routes, Mapping) else routes
        self.keep_alive = keep_alive
        self.latency = latency
        self.fault: Fault = "healthy"
        self.paths: list[str] = []
        self.asked: list[bytes] = []
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
            requests = _Requests(conn)
            while (request := requests.next()) is not None:
                if not self._handle(conn, *request) or not self.keep_alive:
                    return

    def _handle(self, conn: socket.socket, method: str, path: str, body: bytes) -> bool:
        """Answer one request; False when the connection is done for."""
        self.paths.append(path)
        if method == "POST":
            self.asked.append(body)
        fault = self.fault
        try:
            if fault == "refused":
                return False  # accepted just before the port closed: closed unanswered
            if fault == "hang":
                self._closed.wait()
                return False
            if fault == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return False
            if fault == "garbage":
                conn.sendall(GARBAGE)
                return False
            if fault == "huge":
                _respond_huge(conn)
                return False
            delay = SLOW_SECONDS if fault == "slow" else self.latency
            if delay and self._closed.wait(delay):
                return False
            status, answer = self._answer(method, path, body, fault)
            _respond(conn, status, answer, keep_alive=self.keep_alive)
            return True
        except OSError:
            return False  # the client gave up first

    def _answer(self, method: str, path: str, body: bytes, fault: Fault) -> tuple[int, bytes]:
        if path == "/healthz":
            return (200, b"{}") if fault in ("healthy", "slow") else (503, b"")
        if fault == "status_500":
            return 500, b'{"error": "internal"}'
        if (method, path) == ("POST", "/resolve"):
            found: bytes | None = resolve_answer(body, self.get)
        else:
            found = self.get(path) if method == "GET" else None
        if fault in {"healthy", "slow"}:
            return (200, found) if found is not None else (404, b'{"error": "not found"}')
        # a broken upstream sends its broken 200 for known and unknown ids alike
        found = found or b'{"id":"","visitor_id":""}'
        if fault == "invalid_utf8":
            broken = found.replace(b'"id":"', b'"id":"\xff\xfe', 1).replace(
                b'"visitor_id":"', b'"visitor_id":"\xc3\x28', 1
            )  # or, in an answer to /resolve holding no profile, its first key
            return 200, broken if broken != found else found.replace(b'"', b'"\xff\xfe', 1)
        if fault == "wrong_types":
            return 200, b'{"id": 7, "visitor_id": ["v"], "flags": "vip", "traits": []}'
        assert fault == "not_json"
        return 200, b"<html><body>502 Bad Gateway</body></html>"


def routes_of(profiles: Iterable[VisitorProfile | AccountProfile]) -> dict[str, bytes]:
    """What a profile API holding `profiles` answers its GETs (path -> body)."""
    found: dict[str, bytes] = {}
    for profile in profiles:
        body = msgspec.json.encode(profile)
        if isinstance(profile, AccountProfile):
            found[f"/accounts/{segment(profile.id)}"] = body
            continue
        found[f"/visitors/{segment(profile.id)}"] = body
        link = msgspec.json.encode({"visitor_id": profile.id})
        found |= {f"/identities/user_id/{segment(u)}": link for u in profile.user_ids}
        found |= {f"/identities/email_sha256/{e}": link for e in profile.email_sha256}
    return found


def resolve_answer(asked: bytes, get: Callable[[str], bytes | None]) -> bytes:
    """What `POST /resolve` answers for the ids `asked`, built from what the GETs answer
    (`get`: a path's 200 body, or None for its 404): each alias's link (null if none), the
    visitors named (the visitor_id, and each alias's link) that exist, and the accounts
    named (the account_id, and each visitor's own) that exist, in the GETs' documents."""
    ids = msgspec.json.decode(asked, type=dict[str, str])
    identities: dict[str, str | None] = {}
    for kind in ALIAS_KINDS:
        if kind in ids:
            link = get(f"/identities/{kind}/{segment(ids[kind])}")
            identities[kind] = msgspec.json.decode(link, type=_Link).visitor_id if link else None
    named = [ids.get("visitor_id"), *identities.values()]
    visitors = [
        body for v in dict.fromkeys(named) if v and (body := get(f"/visitors/{segment(v)}"))
    ]
    owners = [msgspec.json.decode(body, type=_Owned).account_id for body in visitors]
    accounts = [
        body
        for a in dict.fromkeys([ids.get("account_id"), *owners])
        if a and (body := get(f"/accounts/{segment(a)}"))
    ]
    answer = {
        "identities": identities,
        "visitors": [msgspec.Raw(body) for body in visitors],
        "accounts": [msgspec.Raw(body) for body in accounts],
    }
    return msgspec.json.encode(answer)


class _Link(msgspec.Struct):
    visitor_id: str


class _Owned(msgspec.Struct):
    account_id: str | None = None


class _Requests:
    """The requests one connection sends, one after another: method, path and body."""

    def __init__(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        self._conn = conn
        self._data = b""

    def next(self) -> tuple[str, str, bytes] | None:
        try:
            while b"\r\n\r\n" not in self._data:
                if not self._receive():
                    return None
            head, self._data = self._data.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            length = next(
                (int(v) for k, _, v in (h.partition(b":") for h in lines[1:])
                 if k.strip().lower() == b"content-length"),
                0,
            )  # fmt: skip
            if len(parts) != 3 or length > MAX_REQUEST:
                return None
            while len(self._data) < length:
                if not self._receive():
                    return None
            body, self._data = self._data[:length], self._data[length:]
        except (OSError, ValueError):
            return None
        return parts[0].decode("latin-1"), parts[1].decode("latin-1"), body

    def _receive(self) -> bool:
        chunk = self._conn.recv(65536)
        self._data += chunk
        return bool(chunk)


def _respond(conn: socket.socket, status: int, body: bytes, *, keep_alive: bool) -> None:
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
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
def fake_profile_api(
    routes: Routes, *, keep_alive: bool = False, latency: float = 0.0
) -> Iterator[FakeProfileApi]:
    api = FakeProfileApi(routes, keep_alive=keep_alive, latency=latency)
    try:
        yield api
    finally:
        api.close()
