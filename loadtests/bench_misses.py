"""Cache misses over the HTTP profile API: what one lookup costs the client, and what
decisions cost when every id misses the cache.

Reports numbers; asserts nothing. Needs wrk (Debian: apt install wrk). Run:

    .venv/bin/python loadtests/bench_misses.py [--api-ms 2.2] [--rates 100,1500] [--baseline DIR]

The profile API is the fake one of the tests (tests/fake_profile_api.py) in a process of its
own, keeping connections alive and answering after `--api-ms`, for any number of people made
up from their ids: user id u-X is visitor v-X at account acc-X (a top-tier account with
consent to personalize), and the cookie c-X is nobody.

1. Client CPU per lookup: one GET of a visitor, sequentially, through HttpProfileSource on
   each transport: httpx's own, httpx on httpx-aiohttp's AiohttpTransport, and aiohttp (what
   the source uses); and one POST /resolve of a user id and a cookie on aiohttp.
2. All-miss decisions: `decider serve` (one process) over the http source, every request a
   person and a cookie never seen before (`user_id` + `visitor_id`: a link, a visitor, an
   account and a cookie to look up), one GET per id and then with POST /resolve; and the
   same for `--baseline DIR`, another checkout (say `git archive main | tar -x -C DIR`),
   which is given DECIDER_PROFILE_API_RESOLVE only if it knows it. Per run: the decision
   latency at paced rates (`--rates`, open loop: latency counts from when a request was due;
   at the first rate also for one person, cached: the floor the machine sets at that pace),
   the rate wrk reaches over `--connections` (closed loop: the capacity), and the fallbacks
   in each (decisions unavailable or unchecked, lookups over budget, from /admin/traffic).
   The API alone is measured as the service meets it, the mark the decisions are held to:
   `POST /resolve` for new people at each rate, paced as the decisions are, in every round.
   (Asked back to back, as the first lines show, it answers faster, most of all at p99:
   neither process ever goes idle, while at 100/s both wake for every request.) Rounds
   interleave the targets (`--rounds`, each a fresh `decider serve`, so every run starts
   cold); medians are reported, and the service's own CPU per decision, which a shared
   machine disturbs far less than the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import httpx
import msgspec
import uvloop
from bench_http import serving, wrk

from decider.access import new_key
from decider.model import Identity
from decider.profiles.sources.http import AiohttpUpstream, HttpProfileSource, HttpSettings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fake profile API lives with the tests
from tests.fake_profile_api import fake_profile_api  # noqa: E402

PLACEMENT = "home_hero"
CLOCK = time.perf_counter  # the loop's clock counts whole milliseconds on uvloop
SCRIPT = """local n = 0
function request()
  n = n + 1
  local id = "{prefix}-" .. n
  return wrk.format("POST", "/v1/decide", {{["Content-Type"] = "application/json"}},
    '{{"placement": "{placement}", "identity": {{"user_id": "u-' .. id ..
    '", "visitor_id": "c-' .. id .. '"}}}}')
end
"""


class People:
    """The profile API's answers (path -> body) for anyone made up from their ids."""

    def __init__(self, now: datetime) -> None:
        def ago(days: int) -> str:
            return (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")

        self._visitor = msgspec.json.encode(
            {
                "id": "v-ID",
                "account_id": "acc-ID",
                "user_ids": ["u-ID"],
                "consent": [
                    {"purpose": "personalization", "basis": "consent", "granted_at": ago(90)}
                ],
                "traits": {"role": "vp", "last_seen_at": ago(1)},
            }
        ).replace(b"ID", b"%s")
        self._account = msgspec.json.encode(
            {
                "id": "acc-ID",
                "traits": {
                    "name": "Bench",
                    "fit_score": 92,
                    "stage": "evaluation",
                    "lifecycle": "prospect",
                    "last_seen_at": ago(2),
                    "committee_roles_seen": ["vp", "practitioner", "economic_buyer"],
                    "industry": "logistics",
                    "employees": 1800,
                },
            }
        ).replace(b"ID", b"%s")

    def __call__(self, path: str) -> bytes | None:
        where, _, last = path.rpartition("/")
        kind, _, key = unquote(last).partition("-")
        person = key.encode()
        if (where, kind) == ("/identities/user_id", "u"):
            return b'{"visitor_id": "v-%s"}' % person
        if (where, kind) == ("/visitors", "v"):
            return self._visitor % (person, person, person)
        if (where, kind) == ("/accounts", "acc"):
            return self._account % person
        return None


def _serve_api(latency: float, pipe: Connection) -> None:
    with fake_profile_api(People(datetime.now(UTC)), keep_alive=True, latency=latency) as api:
        pipe.send(api.url)
        pipe.recv()  # until told to stop


@contextmanager
def profile_api(latency_ms: float) -> Iterator[str]:
    """The fake profile API in a process of its own; yields its URL."""
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_serve_api, args=(latency_ms / 1000, theirs), daemon=True
    )
    process.start()
    try:
        yield ours.recv()
    finally:
        ours.send("stop")
        process.join(timeout=10)


def per_lookup(
    make: Callable[[], HttpProfileSource],
    lookup: Callable[[HttpProfileSource], Coroutine[Any, Any, object]],
    n: int,
) -> tuple[float, float]:
    """Client CPU and wall time per lookup, in µs, of `n` lookups after 200 to warm up."""

    async def main() -> tuple[float, float]:
        source = make()
        try:
            for _ in range(200):
                await lookup(source)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(n):
                await lookup(source)
            return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6
        finally:
            await source.aclose()

    return uvloop.run(main())


def transports(url: str, lookups: int, rounds: int) -> None:
    """Section 1: client CPU per lookup, by transport (medians of `rounds`)."""
    settings = HttpSettings(api_url=url)

    def source(upstream: Callable[[], Any]) -> Callable[[], HttpProfileSource]:
        return lambda: HttpProfileSource(upstream(), timeout=1.0)

    sources = {
        "GET, httpx (its default transport)": source(
            lambda: httpx.AsyncClient(base_url=url, timeout=1.0)
        ),
        "GET, aiohttp": source(lambda: AiohttpUpstream(settings)),
    }
    if importlib.util.find_spec("httpx_aiohttp"):  # pip install httpx-aiohttp to compare
        from httpx_aiohttp import AiohttpTransport  # noqa: PLC0415

        sources["GET, httpx on httpx-aiohttp"] = source(
            lambda: httpx.AsyncClient(base_url=url, timeout=1.0, transport=AiohttpTransport())
        )
    asked = Identity(user_id="u-1", visitor_id="c-1")
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in [*sources, "resolve"]}
    for _ in range(rounds):
        for label, make in sources.items():
            results[label].append(per_lookup(make, lambda s: s.visitor("v-1"), lookups))
        results["resolve"].append(
            per_lookup(sources["GET, aiohttp"], lambda s: s.resolve(asked), lookups)
        )
    print(f"\n1. client CPU per lookup ({lookups} sequential, medians of {rounds} rounds)")
    print(f"{'lookup, transport':<44} {'CPU µs':>7} {'wall µs':>8}")
    for label, runs in results.items():
        name = "POST /resolve (user id + cookie), aiohttp" if label == "resolve" else label
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{name:<44} {cpu:>7.0f} {wall:>8.0f}")


def api_latency(url: str, n: int = 2000) -> dict[str, tuple[float, float]]:
    """The profile API's latency asked back to back (closed loop), by request: (p50, p99) in
    ms. Lower than the service meets at a paced rate (api_paced), so not the mark to hold
    decisions to."""

    async def main() -> dict[str, tuple[float, float]]:
        found: dict[str, tuple[float, float]] = {}
        async with aiohttp.ClientSession(url) as session:
            for label, method, path, body in (
                ("GET", "GET", "/visitors/v-1", None),
                ("POST /resolve", "POST", "/resolve", b'{"user_id":"u-1","visitor_id":"c-1"}'),
            ):
                times = []
                for _ in range(n):
                    started = time.perf_counter()
                    async with session.request(method, path, data=body) as answer:
                        await answer.read()
                    times.append((time.perf_counter() - started) * 1000)
                found[label] = percentiles(times)
        return found

    return uvloop.run(main())


def percentiles(times: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]


@dataclass
class Run:
    rate: float
    p50: float
    p99: float
    counts: dict[str, float]
    failed: int = 0


ADMIN_KEY, ADMIN_HASH = new_key()  # for /admin/traffic; decisions are asked without a key


def traffic(url: str) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    found: dict[str, int] = httpx.get(f"{url}/admin/traffic", headers=headers, timeout=10).json()
    return found


def server_cpu() -> float:
    """Seconds of CPU the `decider serve` this process started has used, workers included:
    the machine is shared, so rates vary with the neighbours, the service's CPU per decision
    far less."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        if b"decider.cli" in command:
            used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return sum(cpu for pid, cpu in used.items() if ours(pid))


@contextmanager
def counted(url: str) -> Iterator[dict[str, float]]:
    """Between entering and leaving: fallbacks, lookups over budget, and the service's CPU
    per decision (µs)."""
    before, cpu = traffic(url), server_cpu()
    counts: dict[str, float] = {}
    yield counts
    after, cpu = traffic(url), server_cpu() - cpu
    counts["fallbacks"] = sum(after[k] - before[k] for k in ("unavailable", "unchecked"))
    counts["late"] = after["lookups_over_budget"] - before["lookups_over_budget"]
    counts["cpu"] = cpu / max(1, after["decisions"] - before["decisions"]) * 1e6


def open_loop(
    url: str, rate: float, seconds: float, request: Callable[[int], tuple[str, bytes]]
) -> tuple[list[float], int, float]:
    """POSTs to `url` at `rate` a second for `seconds`, each sent when due whatever the
    answers before it (open loop): the n-th is `request(n)`, a path and a JSON body. Returns
    the latency (ms, counted from when each was due) of those answered 200, how many were
    not, and the seconds it took.

    A thread keeps the pace: uvloop's timers count whole milliseconds, so asyncio.sleep sends
    a request up to a millisecond early or late, noise the latencies would carry. And this
    process collects no garbage meanwhile: its pauses are nobody's latency."""

    async def main() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        failed = 0
        connector = aiohttp.TCPConnector(limit=256)  # as many as a process decides at once
        timeout = aiohttp.ClientTimeout(total=10)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

            async def one(n: int, due: float) -> None:
                nonlocal failed
                path, body = request(n)
                try:
                    async with session.post(path, data=body, headers=headers) as answer:
                        await answer.read()
                        failed += answer.status != 200
                except (aiohttp.ClientError, TimeoutError):  # past capacity: not answered
                    failed += 1
                    return
                latencies.append((CLOCK() - due) * 1000)

            loop = asyncio.get_running_loop()
            tasks: list[asyncio.Task[None]] = []
            start = CLOCK() + 0.05

            def launch(n: int, due: float) -> None:
                tasks.append(loop.create_task(one(n, due)))

            def pace() -> None:
                for n in range(int(rate * seconds)):
                    due = start + n / rate
                    time.sleep(max(0.0, due - CLOCK()))
                    loop.call_soon_threadsafe(launch, n, due)

            # the loop runs callbacks in the order they came: every launch before this returns
            await asyncio.to_thread(pace)
            await asyncio.gather(*tasks)
            return latencies, failed, CLOCK() - start

    gc.collect()
    gc.disable()
    try:
        return uvloop.run(main())
    finally:
        gc.enable()


def paced(url: str, rate: float, seconds: float, prefix: str, *, warm: bool = False) -> Run:
    """Decisions at `rate` a second for `seconds` (open loop); each about a new person, or
    (`warm`) all about one, cached after the first: the floor the machine sets at that pace
    (on a VM, waking idle cores costs a decision a millisecond or more)."""

    def decision(n: int) -> tuple[str, bytes]:
        person = f"{prefix}-{0 if warm else n}"
        identity = {"user_id": f"u-{person}", "visitor_id": f"c-{person}"}
        return "/v1/decide", msgspec.json.encode({"placement": PLACEMENT, "identity": identity})

    with counted(url) as counts:
        latencies, failed, took = open_loop(url, rate, seconds, decision)
    return run_of(latencies, failed, took, counts)


def api_paced(url: str, rate: float, seconds: float, prefix: str) -> Run:
    """The profile API alone as the service meets it: POST /resolve of a new person's user
    id and cookie at `rate` a second, paced as the decisions are. Asked back to back, it
    answers faster than at 100/s: neither process ever goes idle (see api_latency)."""

    def resolve(n: int) -> tuple[str, bytes]:
        person = f"{prefix}-{n}"
        return "/resolve", msgspec.json.encode(
            {"user_id": f"u-{person}", "visitor_id": f"c-{person}"}
        )

    return run_of(*open_loop(url, rate, seconds, resolve), {})


def run_of(latencies: list[float], failed: int, took: float, counts: dict[str, float]) -> Run:
    p50, p99 = percentiles(latencies or [float("nan")])
    return Run(len(latencies) / took, p50, p99, counts, failed)


def saturated(url: str, script: Path, seconds: int, connections: int) -> Run:
    with counted(url) as counts:
        rate, p50, p99 = wrk(url, script, seconds, connections)
    return Run(rate, p50, p99, counts)


def decisions(
    label: str, checkout: Path, env: dict[str, str], args: argparse.Namespace, work: Path
) -> list[tuple[str, Run]]:
    """Section 2 for one checkout and mode: paced runs, then wrk."""
    runs: list[tuple[str, Run]] = []
    serve = [sys.executable, "-m", "decider.cli", "serve"]
    env = {
        "PYTHONPATH": str(checkout / "src"),
        "DECIDER_RULES_DIR": str(checkout / "rules"),
        "DECIDER_WATCH_RULES": "false",
        "DECIDER_PROFILE_SOURCE": "http",
        "DECIDER_WORKERS": "1",  # one process, where `decider serve` starts one per CPU
        "DECIDER_API_KEYS": f"bench:admin:{ADMIN_HASH}",
        "DECIDER_ALLOW_ANONYMOUS": "true",
        **env,
    }
    prefix = f"{os.getpid()}{time.monotonic_ns()}"
    with serving(serve, work, env) as url:
        floor = paced(url, args.rates[0], args.seconds, f"{prefix}warm", warm=True)
        runs.append((f"{label}, {args.rates[0]:g}/s, cached", floor))
        for rate in args.rates:
            runs.append(
                (f"{label}, {rate:g}/s", paced(url, rate, args.seconds, f"{prefix}p{rate:.0f}"))
            )
        script = work / f"{prefix}.lua"
        script.write_text(SCRIPT.format(prefix=f"{prefix}w", placement=PLACEMENT))
        runs.append(
            (
                f"{label}, wrk -c{args.connections}",
                saturated(url, script, args.seconds, args.connections),
            )
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--api-ms", type=float, default=2.2, help="the API's added latency")
    parser.add_argument("--seconds", type=int, default=4, help="length of each run")
    parser.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[100.0, 1500.0],
        help="paced decision rates, comma-separated",
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--lookups", type=int, default=3000, help="lookups per CPU round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each measurement")
    parser.add_argument("--baseline", type=Path, help="another checkout of Decider to compare")
    parser.add_argument("--skip-transports", action="store_true", help="section 2 only")
    args = parser.parse_args()
    if not args.skip_transports:
        with profile_api(0.0) as api:  # waiting on a slower API would blur the CPU counts
            transports(api, args.lookups, args.rounds)
    with profile_api(args.api_ms) as api, tempfile.TemporaryDirectory() as scratch:
        print(f"\n2. all-miss decisions (user_id + visitor_id), API at +{args.api_ms:g} ms")
        for request, (p50, p99) in api_latency(api).items():
            print(f"the API alone, {request}, back to back: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        targets = [("this checkout, GETs", ROOT, {"DECIDER_PROFILE_API_RESOLVE": "false"})]
        targets.append(("this checkout, resolve", ROOT, {"DECIDER_PROFILE_API_RESOLVE": "true"}))
        if args.baseline:
            base = args.baseline.resolve()
            knows = "api_resolve" in (base / "src/decider/profiles/sources/http.py").read_text()
            targets.append((f"{base.name}, GETs", base, {}))
            if knows:
                targets.append(
                    (f"{base.name}, resolve", base, {"DECIDER_PROFILE_API_RESOLVE": "true"})
                )
        results: dict[str, list[Run]] = {}
        for _ in range(args.rounds):  # interleaved, so a noisy neighbour hurts all alike
            prefix = f"{os.getpid()}{time.monotonic_ns()}api"
            for rate in args.rates:
                run = api_paced(api, rate, args.seconds, f"{prefix}{rate:.0f}")
                results.setdefault(f"the API alone, POST /resolve, {rate:g}/s", []).append(run)
            for label, checkout, mode in targets:
                env = {**mode, "DECIDER_PROFILE_API_URL": api}
                for name, run in decisions(label, checkout, env, args, Path(scratch)):
                    results.setdefault(name, []).append(run)
    print(
        f"{'checkout, mode, load':<42} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU µs/dec':>10} {'fallbacks':>9} {'late':>5} {'failed':>6}"
    )
    print(f"(medians of {args.rounds} rounds; fallbacks, late and failed: per round)")
    for label, runs in results.items():

        def median(value: Callable[[Run], float], of: list[Run] = runs) -> float:
            return statistics.median(value(run) for run in of)

        def each(key: str, of: list[Run] = runs) -> str:
            return "/".join(f"{run.counts[key]:.0f}" for run in of) if of[0].counts else "-"

        cpu = f"{median(lambda r: r.counts['cpu']):.0f}" if runs[0].counts else "-"
        failed = "/".join(str(run.failed) for run in runs)
        print(
            f"{label:<42} {median(lambda r: r.rate):>6.0f} {median(lambda r: r.p50):>7.2f} "
            f"{median(lambda r: r.p99):>7.2f} {cpu:>10} {each('fallbacks'):>9} {each('late'):>5} "
            f"{failed:>6}"
        )


if __name__ == "__main__":
    main()
