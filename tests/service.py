"""Run `decider serve` as a real process on loopback, for tests that need the whole service."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from .privacy import leaks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    def __init__(self, process: subprocess.Popen[bytes], client: httpx.Client, log: Path) -> None:
        self.process = process
        self.client = client
        self.log = log


@contextmanager
def running_service(
    rules: Path,
    workdir: Path,
    *,
    command: Sequence[str] | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Iterator[Service]:
    """`decider serve` over `rules` (or `command`, given `--port N`), its SQLite store in
    `workdir`, started in `cwd` (or here, its segment usage file then in `workdir` too);
    stopped on exit. The client sends `headers` (a key, say)."""
    port = free_port()
    environ = {**os.environ, "DECIDER_PROFILE_DB": str(workdir / "decider.db")}
    if cwd is None:  # not beside the exposure data, which is the checkout's
        environ["DECIDER_USAGE_DB"] = str(workdir / "usage.db")
    environ.update(env or {})
    log = workdir / f"serve-{port}.log"
    if command is None:
        command = [sys.executable, "-m", "decider.cli", "serve", "--rules", str(rules)]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env=environ,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=headers)
    # `decider serve` says it listens once every worker does; the first may answer before
    announces = "serve" in command
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.get("/healthz").status_code == 200 and (
                    not announces or "listening on http" in log.read_text()
                ):
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"decider serve did not come up:\n{log.read_text()}")
            time.sleep(0.05)
        yield Service(process, client, log)
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
    assert leaks(log.read_text()) == [], "the service logged an identifier"
