"""`decider serve --workers N`: N worker processes serving one port, and their supervisor.

Each worker is a whole `decider serve` with a listener of its own on the port
(SO_REUSEPORT), so the kernel spreads connections over the workers evenly; one listener
shared by all gives nearly every keep-alive connection to whichever worker accepts fastest.
The supervisor (the process started) has compiled the rules and opened the profile store
once before any worker starts (so samples are seeded once), holds the port bound but not
listening (so a port in use stops it with a message, and port 0 picks one port for all),
starts the workers in a process group of their own and:

- says it is listening once every worker has reported ready (decider.server.peers);
- passes SIGHUP (reload) on to every worker; SIGTERM or SIGINT stops every worker
  gracefully, then itself;
- restarts a worker that dies, unless workers keep dying within seconds of starting, which
  stops the service (a fault that every restart would meet again);
- removes the reports of workers gone, and the run directory at the end.

A worker whose supervisor is killed outright is stopped by the kernel (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from decider.server.peers import ASKED, Place, read_report

log = logging.getLogger("decider")

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0  # uvicorn's graceful shutdown (25 s) and then some
QUICK_DEATH_S = 10.0  # a worker dying sooner after its start counts as a crash loop
QUICK_DEATHS = 3


def listener(host: str, port: int, *, shared: bool, listen: bool = True) -> socket.socket:
    """A TCP socket bound to `host`:`port`; `shared`: with SO_REUSEPORT, so every worker
    binds the port with a listener of its own. Raises OSError."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def held(host: str, port: int) -> socket.socket:
    """The port for workers to share, bound but not listening: first bound alone, so a port
    another process listens on (another Decider's workers too) is refused, as it is to one
    process; port 0 picks one. Raises OSError."""
    with listener(host, port, shared=False, listen=False) as alone:
        port = alone.getsockname()[1]
    return listener(host, port, shared=True, listen=False)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Runs `count` workers, each `command` plus `--worker INDEX --run-dir DIR`, with `env`."""

    def __init__(
        self,
        count: int,
        command: Sequence[str],
        env: Mapping[str, str],
        run_dir: Path,
    ) -> None:
        self.count = count
        self.command = list(command)
        self.env = dict(env)
        self.run_dir = run_dir
        self.workers: dict[int, _Worker] = {}
        self._stopping = False
        self._hangups = 0
        self._quick_deaths = 0

    def run(self, ready: Callable[[], None]) -> int:
        """Serve until SIGTERM or SIGINT; `ready` is called once every worker is. The exit
        status: 0 when stopped, 1 when workers could not start or kept dying."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        # workers' signals, sent here by mistake (a log rotation's USR1): not the end of all
        for signum in (signal.SIGUSR1, signal.SIGUSR2):
            previous[signum] = signal.signal(signum, self._on_signal)
        try:
            for index in range(self.count):
                self._start(index)
            if not self._wait_ready():
                # told to stop before every worker was ready (a probe saw the first one
                # answer): a stop like any other, not a failed start
                return 0 if self._stopping else 1
            ready()
            return self._supervise()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, _: object) -> None:
        if signum == signal.SIGHUP:
            self._hangups += 1
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True

    def _start(self, index: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            Place(index, self.run_dir).report_path().unlink()
        process = subprocess.Popen(
            [*self.command, "--worker", str(index), "--run-dir", str(self.run_dir)],
            env=self.env,
            process_group=0,  # Ctrl-C reaches the supervisor, which stops each worker once
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (the supervisor runs no threads)
        )
        self.workers[index] = _Worker(index, process)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = set(self.workers)
        while waiting:
            if self._stopping or time.monotonic() > deadline:
                return False
            for index in list(waiting):
                worker = self.workers[index]
                if worker.process.poll() is not None:
                    return False  # it said why on stderr
                report = read_report(Place(index, self.run_dir).report_path())
                if report is not None and report.pid == worker.process.pid:
                    waiting.discard(index)
            time.sleep(0.05)
        return True

    def _supervise(self) -> int:
        while not self._stopping:
            time.sleep(0.1)
            if self._hangups:
                self._hangups = 0
                self._signal_all(signal.SIGHUP)
            for worker in list(self.workers.values()):
                code = worker.process.poll()
                if code is None or self._stopping:
                    continue
                lived = time.monotonic() - worker.started
                # a worker that failed as it started counts towards giving up; one killed
                # (by the OOM killer, an operator) does not
                failed = code > 0 and lived < QUICK_DEATH_S
                self._quick_deaths = self._quick_deaths + 1 if failed else 0
                log.error(
                    "worker %d exited with status %d after %.1f s",
                    worker.index,
                    code,
                    lived,
                    extra={"event": "worker_exit", "worker": worker.index, "status": code},
                )
                if self._quick_deaths >= QUICK_DEATHS:
                    serving = [w for w in self.workers.values() if w.process.poll() is None]
                    if not serving:
                        log.error(
                            "workers keep dying as they start: stopping",
                            extra={"event": "workers_failing"},
                        )
                        return 1
                    # the others still serve: stopping them would turn one bad start into an
                    # outage (admin calls name the missing worker as unconfirmed)
                    log.error(
                        "worker %d keeps dying as it starts: the other %d serve on without it",
                        worker.index,
                        len(serving),
                        extra={"event": "workers_failing", "worker": worker.index},
                    )
                    del self.workers[worker.index]
                    self._quick_deaths = 0
                    continue
                self._start(worker.index)
        return 0

    def _signal_all(self, signum: signal.Signals) -> None:
        for worker in self.workers.values():
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    def _stop_all(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self.workers.values():
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def _die_with_parent() -> None:
    """In a worker, before it runs: the signals it is asked by held until it answers them
    (a mask survives exec); SIGTERM when the supervisor dies (Linux)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, ASKED)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def worker_count(requested: int, cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """DECIDER_WORKERS: 0 means one per CPU this process may use: the CPUs it may run on,
    fewer if its cgroup (a container's CPU limit) allows less time than that, at least one."""
    if requested:
        return requested
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 limit to read
        pass
    return max(1, cpus)
