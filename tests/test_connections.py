"""What a served process does with connections that misbehave, over real sockets: idle ones,
requests dribbled a byte at a time (headers or body), headers over the limit."""

from __future__ import annotations

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


def response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole response: its head, and its body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


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


@pytest.mark.parametrize("pieces", [1, 8])
def test_headers_over_the_limit_are_a_431_with_problem_details(
    served: Service, pieces: int
) -> None:
    """Whether the headers arrive at once or in pieces (the HTTP layer sees only the latter)."""
    request = post(extra=b"X-Padding: " + b"a" * 6000 + b"\r\n")
    size = len(request) // pieces + 1
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
