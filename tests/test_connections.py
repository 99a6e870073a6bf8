"""What a served process does with connections that misbehave, over real sockets: idle ones,
requests dribbled a byte at a time (headers or body), headers over the limit, requests that
are not HTTP/1.1, and the HTTP/1.x a client may send: 1.0, 100-continue, upgrades."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import RULES
from .service import Service, running_service

BODY = b'{"placement": "home_hero", "identity": {"user_id": "u-ada"}}'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "DECIDER_IDLE_TIMEOUT_S": "1",
        "DECIDER_MAX_HEADER_BYTES": "4096",
        "DECIDER_WATCH_RULES": "false",
    }
    workdir: Path = tmp_path_factory.mktemp("connections")
    with running_service(RULES, workdir, env=env) as service:
        yield service


def connect(service: Service) -> socket.socket:
    port = service.client.base_url.port
    assert port is not None
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)  # bounds the test, far past the 1 s the service allows
    return sock


def closed(sock: socket.socket) -> bool:
    """The service closed the connection (end of stream, or a reset)."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def first(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The first whole response in `data`, its head and its body (by Content-Length), and
    what follows it; None while it is not whole."""
    head, blank, rest = data.partition(b"\r\n\r\n")
    if not blank:
        return None
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return (head, rest[:length], rest[length:]) if len(rest) >= length else None


def response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole response: its head, and its body."""
    data = b""
    while (whole := first(data)) is None:
        more = sock.recv(65536)
        assert more, f"closed before a whole response: {data!r}"
        data += more
    head, body, _ = whole
    return head, body


def status_lines(sock: socket.socket) -> list[bytes]:
    """The status line of every response sent until the service closes the connection."""
    data = b""
    while more := sock.recv(65536):
        data += more
    lines = []
    while (whole := first(data)) is not None:
        head, _, data = whole
        lines.append(head.split(b"\r\n")[0])
    assert data == b"", f"not a whole response: {data!r}"
    return lines


def errors(service: Service) -> list[dict[str, object]]:
    """What the service logged as errors, or with an exception (its log records are JSON
    lines, among the lines it prints)."""
    lines = service.log.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [r for r in records if r["level"] == "error" or "exception" in r]


def post(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def test_a_connection_that_sends_nothing_is_closed(served: Service) -> None:
    with connect(served) as sock:
        assert closed(sock)


def test_headers_dribbled_a_byte_at_a_time_are_cut_off(served: Service) -> None:
    request = post()[:-4]  # never the blank line that ends the headers
    with connect(served) as sock:
        started = time.monotonic()
        for byte in request:
            try:
                sock.send(bytes([byte]))
            except OSError:  # broken pipe or reset: the service closed it
                break
            time.sleep(0.05)
        else:
            assert closed(sock)
        assert time.monotonic() - started < 5


def test_a_body_begun_and_never_finished_is_cut_off(served: Service) -> None:
    with connect(served) as sock:
        sock.send(post()[:-5])
        assert closed(sock)


def test_a_request_sent_slowly_but_in_time_is_answered_and_kept_alive(served: Service) -> None:
    with connect(served) as sock:
        for _ in range(2):
            request = post()
            sock.send(request[:20])
            time.sleep(0.3)
            sock.send(request[20:])
            head, _ = response(sock)
            assert head.startswith(b"HTTP/1.1 200 OK")
        assert closed(sock)  # then idle


@pytest.mark.parametrize("ended", [True, False])
def test_headers_over_the_limit_are_a_431_with_problem_details(
    served: Service, ended: bool
) -> None:
    """Whether the head is whole (the app sees it) or never ends (the HTTP layer stops it),
    sent at once or in pieces."""
    request = post(extra=b"X-Padding: " + b"a" * 6000 + b"\r\n")
    if not ended:
        request = request[: request.index(b"X-Padding") + 5000]
    size = len(request) // (1 if ended else 8) + 1
    with connect(served) as sock:
        for start in range(0, len(request), size):
            try:
                sock.send(request[start : start + size])
            except (BrokenPipeError, ConnectionResetError):
                break  # the service answered and closed before the rest was sent
        head, body = response(sock)
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["code"] == "headers_too_large"


def test_a_pipelined_request_whose_body_never_comes_is_cut_off(served: Service) -> None:
    """The second request's headers arrive while the first is answered; its body never."""
    second = post()[: -len(BODY)]  # headers only, announcing a body
    with connect(served) as sock:
        sock.send(post() + second)
        head, _ = response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert closed(sock)


def test_a_client_that_never_reads_is_dropped(served: Service) -> None:
    """Requests piled up while nothing is read: the service cannot write, and gives up."""
    with connect(served) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = b"GET /schema/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < 8:
            try:
                sock.send(request)
                sent += 1
            except OSError:  # dropped: reset, or the pipe broken
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"still open after {sent} requests unread")
    # the one it was answering is told too: it does not write to the closed connection
    assert served.client.get("/healthz").status_code == 200  # after what dropping it logs
    assert errors(served) == []


@pytest.mark.parametrize(
    "request_",
    [
        post(extra=b"Transfer-Encoding: chunked\r\n"),  # which one frames the body?
        post(extra=b"Content-Length: 3\r\n"),
        b"GE\x01T /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /healthz HTTP/1.7\r\nHost: 127.0.0.1\r\n\r\n",
        post(extra=b"X-Note: a\x00b\r\n"),
        post(extra=b"X Note: b\r\n"),
        post(extra=b"X-Note: a\r\n folded\r\n"),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2 without asking first
        b"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=[
        "length-and-chunked",
        "two-lengths",
        "control-byte-in-method",
        "non-ascii-path",
        "http-1.7",
        "nul-in-header",
        "space-in-header-name",
        "folded-header",
        "http2-preface",
        "bad-chunk",
    ],
)
def test_what_is_not_http_1_1_is_a_400_with_problem_details(
    served: Service, request_: bytes
) -> None:
    with connect(served) as sock:
        sock.send(request_)
        head, body = response(sock)
        assert closed(sock)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["code"] == "http_error"
    assert errors(served) == []


@pytest.mark.parametrize(
    "malformed",
    [b"GE\x01T / HTTP/1.1\r\n\r\n", b"GET /\xff HTTP/1.1\r\n\r\n"],
    ids=["bad-method", "non-ascii-path"],  # the parser's refusal, and uvicorn's after it
)
def test_a_400_comes_after_the_answers_to_the_requests_before_it(
    served: Service, malformed: bytes
) -> None:
    """Pipelined: the second request is malformed; the first is still answered, first."""
    with connect(served) as sock:
        sock.send(post() + malformed)
        assert status_lines(sock) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request"]


def test_http_1_0_is_answered_and_closed(served: Service) -> None:
    with connect(served) as sock:
        sock.send(post().replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        head, body = response(sock)
        assert b"connection: close" in head.lower()
        assert closed(sock)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(body)["placement"] == "home_hero"


def test_a_body_expecting_100_continue_is_asked_for(served: Service) -> None:
    request = post(extra=b"Expect: 100-continue\r\n")
    with connect(served) as sock:
        sock.send(request[: -len(BODY)])
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            byte = sock.recv(1)  # one at a time: none of the final answer's
            assert byte, f"closed after {interim!r}"
            interim += byte
        sock.send(BODY)
        head, _ = response(sock)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert head.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize(
    "upgrade",
    [
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
    ],
    ids=["websocket", "h2c"],
)
def test_an_upgrade_is_declined_answered_in_http_1_1_and_closed(
    served: Service, upgrade: bytes
) -> None:
    """No WebSockets, no HTTP/2: the request is answered as if it had not asked, and what
    follows on the connection (the other protocol's) is not read as requests."""
    with connect(served) as sock:
        sock.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + upgrade + b"\r\n")
        head, body = response(sock)
        assert b"connection: close" in head.lower()
        with contextlib.suppress(OSError):  # broken pipe or reset: already closed
            sock.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert closed(sock)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(body) == {"status": "ok"}
