"""decider: serve decisions; start, check, test and explain rules; import profiles.

Every command runs the same core as the server, so what `check` accepts is what serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import ipaddress
import os
import re
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

import msgspec

from decider import __version__
from decider.access import KeyRing, KeysError, Scope, make_key, new_key
from decider.errors import (
    DeciderError,
    ImportFileError,
    ProfileConflict,
    ProfileSourceError,
    RulesetError,
    plain_types,
    printable,
)
from decider.measure.report.command import add_report as _add_report
from decider.model import Instant
from decider.profile import AccountProfile, VisitorProfile
from decider.profiles.importer import ImportReport, import_file
from decider.profiles.jsonl import sample_lines
from decider.profiles.sources import driver_for
from decider.profiles.sources.base import Change, ProfileStore
from decider.profiles.sources.sqlite import SqliteSettings
from decider.rules.cel import ENGINES, installed_engines, new_engine
from decider.rules.compiler import compile_ruleset
from decider.rules.explain import Fixture, offline_decision, render, resolution_of
from decider.rules.files import read_yaml
from decider.rules.samples import write_samples
from decider.rules.suites import (
    compile_and_test,
    disagreements,
    format_result,
    run_suites,
    suite_files,
)
from decider.service import utcnow
from decider.settings import Settings, SettingsError, unknown_variables
from decider.traits import TraitError, TraitSchema
from decider.wiring import Service, open_store, read_profile_schema

if TYPE_CHECKING:
    from decider.measure.outcomes import Consent
    from decider.server.peers import Place

_DEFAULTS = Settings()
_DB = SqliteSettings().db
ENGINE_HELP = f"CEL engine [DECIDER_ENGINE, default {_DEFAULTS.engine}]"


class Streams(NamedTuple):
    out: TextIO
    err: TextIO


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run one command; returns the exit status. `out`, when given, takes both streams."""
    env = os.environ if environ is None else environ
    streams = Streams(out or sys.stdout or io.StringIO(), out or sys.stderr or io.StringIO())
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as done:  # --help, --version or a usage error, already printed
            sys.stdout.flush()
            return done.code if isinstance(done.code, int) else 2
        if getattr(args, "worker", None) is None:  # a worker's supervisor said it already
            for problem in unknown_variables(env):
                print(f"decider: warning: {problem}", file=streams.err)
        result: int = args.run(args, env, streams)
        streams.out.flush()  # here, so a reader that went away is met below, not at exit
    except (SettingsError, DeciderError) as exc:  # it may quote a file (escape codes too)
        print(f"decider: {printable(str(exc))}", file=streams.err)
        return 2
    except BrokenPipeError:
        # the reader went away (`decider explain rules | head`): stop quietly, as cat does
        if out is None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # output that cannot be written: a full disk, a closed stream
        print(f"decider: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decider", description=__doc__)
    parser.add_argument("--version", action="version", version=f"decider {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the HTTP service", description="Run the HTTP decision service."
    )
    serve.add_argument(
        "--rules",
        dest="rules_dir",
        help=f"rules directory [DECIDER_RULES_DIR, default {_DEFAULTS.rules_dir}]",
    )
    serve.add_argument("--host", help=f"listen address [DECIDER_HOST, default {_DEFAULTS.host}]")
    serve.add_argument(
        "--port", help=f"listen port; 0 picks one [DECIDER_PORT, default {_DEFAULTS.port}]"
    )
    serve.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP)
    serve.add_argument(
        "--profile-db",
        help=f"SQLite file of the sqlite profile source [DECIDER_PROFILE_DB, default {_DB}]",
    )
    serve.add_argument(
        "--workers",
        help="worker processes, each with its own listener on the port; 0: one per CPU "
        "[DECIDER_WORKERS, default 0; 1 with the memory profile source]",
    )
    # how a supervisor starts its workers (decider.server.workers)
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)

    init = commands.add_parser(
        "init",
        help="write the sample rules, schema and rule tests into a new directory",
        description="Write the sample ruleset to start from; then `decider serve --rules DIR`.",
    )
    init.add_argument("rules_dir", metavar="DIR", type=Path, help="a new or empty directory")
    init.set_defaults(run=_init)

    check = commands.add_parser(
        "check",
        help="compile, lint and test a rules directory, as the server loads it",
        description="Load a rules directory as the server would, and print every problem.",
    )
    check.add_argument("rules_dir", metavar="RULES_DIR", type=Path, help="the rules directory")
    check.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP)
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(run=_check)

    test = commands.add_parser(
        "test",
        help="run the rule test suites in RULES_DIR/tests",
        description="Run the rule tests; show each failure with expected, actual and trace.",
    )
    test.add_argument("rules_dir", metavar="RULES_DIR", type=Path, help="the rules directory")
    test.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP)
    test.set_defaults(run=_test)

    explain = commands.add_parser(
        "explain",
        help="explain a decision for a profile, offline, in words a marketer reads",
        description="Decide offline for a profile given by hand, and say why, step by step.",
    )
    explain.add_argument("rules_dir", metavar="RULES_DIR", type=Path, help="the rules directory")
    explain.add_argument(
        "--profile",
        type=Path,
        help='YAML or JSON file: {"visitor": {...}, "account": {...}} (default: unknown visitor)',
    )
    explain.add_argument("--context", default="{}", help="the request context, as JSON")
    explain.add_argument("--now", help="the decision time, RFC 3339 with an offset (default: now)")
    explain.add_argument(
        "--channel", help="only this channel's placements (web, email, or one the rules define)"
    )
    explain.add_argument("--placement", help="one placement (default: every one, of --channel)")
    explain.add_argument(
        "--consent", help="the banner's granted purposes, comma-separated (default: none sent)"
    )
    explain.add_argument("--gpc", action="store_true", help="as if Sec-GPC: 1 was sent")
    explain.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP)
    explain.set_defaults(run=_explain)

    _add_profiles(commands)
    _add_outcomes(commands)
    _add_report(commands)

    keys = commands.add_parser(
        "keys",
        help="make an API key",
        description="Make an API key for a caller: the key, shown once, and the hash to "
        "configure (DECIDER_API_KEYS or DECIDER_API_KEYS_FILE).",
    )
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    new = key_commands.add_parser(
        "new", help="make a new random key", description="Make a new random API key."
    )
    new.add_argument("--name", required=True, help="who holds the key (e.g. web-edge)")
    new.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=[str(scope) for scope in Scope],
        help="what the key may do; repeat for several",
    )
    new.set_defaults(run=_new_key)
    return parser


def _new_key(args: argparse.Namespace, _env: Mapping[str, str], std: Streams) -> int:
    key, sha256 = new_key()
    try:
        entry = make_key(args.name, args.scopes, sha256, "--name")
    except KeysError as exc:
        print(f"decider: {exc}", file=std.err)
        return 2
    scopes = sorted(entry.scopes)
    print(f"key:  {key}", file=std.out)
    print("      give it to the caller once; Decider keeps only its hash", file=std.out)
    print(f"DECIDER_API_KEYS entry:  {entry.name}:{'+'.join(scopes)}:{sha256}", file=std.out)
    print("DECIDER_API_KEYS_FILE entry:", file=std.out)
    print(
        f"  - {{name: {entry.name}, scopes: [{', '.join(scopes)}], sha256: {sha256}}}", file=std.out
    )
    return 0


def _add_profiles(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """decider profiles import | show | delete."""
    profiles = commands.add_parser(
        "profiles",
        help="import, show and erase profiles in the store",
        description="Import, show and erase profiles in the store DECIDER_PROFILE_SOURCE "
        "names (sqlite, the default, or redis). Running services see each change on their "
        "next decision.",
    )
    profile_commands = profiles.add_subparsers(required=True, metavar="ACTION")
    load = profile_commands.add_parser(
        "import",
        help="import a JSONL file of profiles",
        description="Import visitor and account profiles, one JSON record a line, checked "
        "against the rules' profile schema; a file with any bad line imports nothing.",
    )
    source = load.add_mutually_exclusive_group(required=True)
    source.add_argument("file", metavar="FILE", type=Path, nargs="?", help="the JSONL file")
    source.add_argument(
        "--samples",
        action="store_true",
        help="the bundled sample profiles, dated relative to now (to try the sample rules)",
    )
    load.add_argument(
        "--replace",
        action="store_true",
        help="move a user id or email hash another visitor holds to the file's visitor",
    )
    load.add_argument(
        "--rules",
        dest="rules_dir",
        help="rules whose schema.yaml types the traits [DECIDER_RULES_DIR]",
    )
    load.set_defaults(run=_import)
    show = profile_commands.add_parser(
        "show",
        help="print one stored profile (right of access)",
        description="Print what the store holds about one person or account, as JSON.",
    )
    show.set_defaults(run=_show)
    erase = profile_commands.add_parser(
        "delete",
        help="erase one visitor, with its ids, or one account (right to erasure)",
        description="Erase a visitor (its profile, user ids and email hashes) or an account.",
    )
    erase.set_defaults(run=_delete)
    for action in (load, show, erase):
        action.add_argument(
            "--db", dest="profile_db", help=f"SQLite file [DECIDER_PROFILE_DB, default {_DB}]"
        )
    for action in (show, erase):
        who = action.add_mutually_exclusive_group(required=True)
        who.add_argument("--visitor-id", help="the visitor's id")
        who.add_argument("--user-id", help="a user id linked to the visitor")
        who.add_argument("--email-sha256", help="an email hash linked to the visitor")
        who.add_argument("--account-id", help="an account's id")


def _add_outcomes(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """decider outcomes import (decider.measure.outcome_import)."""
    outcomes = commands.add_parser(
        "outcomes",
        help="import outcome events for the lift report",
        description="Store outcome events, as POST /v1/outcomes does, in DECIDER_OUTCOME_DIR.",
    )
    actions = outcomes.add_subparsers(required=True, metavar="ACTION")
    load = actions.add_parser(
        "import",
        help="import a JSONL file of outcome events",
        description="Import outcome events, one JSON event a line (as POST /v1/outcomes takes "
        "one); a file with any bad line imports nothing. Events by identity are resolved "
        "against the profile store, as decisions are.",
    )
    load.add_argument("file", metavar="FILE", help="the JSONL file; - for standard input")
    load.add_argument(
        "--db", dest="profile_db", help=f"SQLite file [DECIDER_PROFILE_DB, default {_DB}]"
    )
    load.set_defaults(run=_import_outcomes)


def _import_outcomes(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    from decider.measure import outcome_import as outcomes  # noqa: PLC0415
    from decider.measure.units import units_for  # noqa: PLC0415

    settings = Settings.from_env(_with_flags(env, profile_db=args.profile_db))
    try:
        with outcomes.open_file(args.file) as file:
            done = outcomes.import_outcomes(
                file,
                settings=settings,
                units=units_for(settings),
                store=lambda: _store(args, env).store,
                consent=lambda: _consent(settings),
                now=utcnow(),
            )
    except OSError as exc:
        print(f"decider: cannot read {args.file}: {exc.strerror or exc}", file=std.err)
        return 1
    except outcomes.ImportFailed as exc:
        print(exc, file=std.out)
        if exc.stored_nothing:
            print(f"nothing imported from {args.file}", file=std.out)
        return 1
    noun = "outcome" if done.outcomes == 1 else "outcomes"
    print(f"imported {done.outcomes} {noun} into {settings.outcome_path}", file=std.out)
    if done.duplicates:
        ids = "event id" if done.duplicates == 1 else "event ids"
        print(f"{done.duplicates} {ids} given again in the file: stored once", file=std.out)
    if done.nobody:
        print(
            f"{done.nobody} of {done.by_identity} by identity name nobody known: stored with "
            "neither account nor visitor",
            file=std.out,
        )
    if done.unconsented:
        print(
            f"{done.unconsented} of {done.by_identity} by identity without the channel's "
            "consent: stored with neither account nor visitor",
            file=std.out,
        )
    return 0


def _consent(settings: Settings) -> Consent:
    """The consent check of the rules in DECIDER_RULES_DIR, for outcomes by identity."""
    from decider.measure.outcomes import Consent  # noqa: PLC0415
    from decider.wiring import load_rules  # noqa: PLC0415

    policy = load_rules(settings.rules_dir, settings.engine).policy
    return Consent(lambda: policy, utcnow)


def _with_flags(env: Mapping[str, str], **flags: object) -> dict[str, str]:
    """The environment with command-line flags written over their variables. An empty flag
    is a mistake (`--port "$PORT"` with PORT unset), not a wish for the default."""
    given = {f"DECIDER_{name.upper()}": str(v) for name, v in flags.items() if v is not None}
    for variable, value in given.items():
        if not value.strip():
            flag = "--" + variable.removeprefix("DECIDER_").lower().replace("_", "-")
            raise SettingsError(f"{variable} ({flag}): empty; leave the flag out for the default")
    return {**env, **given}


def _serve(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    # until the service's own handler is in place, a SIGHUP (reload) must not end it
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return _start(args, env, std)
    finally:
        signal.signal(signal.SIGHUP, previous)


def _start(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    env = _with_flags(
        env,
        rules_dir=args.rules_dir,
        host=args.host,
        port=args.port,
        engine=args.engine,
        profile_db=args.profile_db,
        workers=args.workers,
    )
    settings = Settings.from_env(env)
    if not settings.rules_dir.is_dir():
        print(_no_rules(settings.rules_dir), file=std.err)
        return 1
    if args.worker is not None:
        from decider.server.peers import Place  # noqa: PLC0415

        return _work(settings, Place(args.worker, args.run_dir, settings.workers))
    count = _workers(settings)
    return _serve_one(settings, std) if count == 1 else _supervise(settings, env, count, std)


def _workers(settings: Settings) -> int:
    """How many workers to start: DECIDER_WORKERS, or one per CPU; one for a profile source
    that lives inside a process (its writes would reach one worker only)."""
    from decider.server.workers import worker_count  # noqa: PLC0415

    if driver_for(settings.profile).shared or settings.profile_source == "http":
        return worker_count(settings.workers)
    if settings.workers > 1:
        raise SettingsError(
            f"DECIDER_WORKERS (--workers): {settings.workers} workers cannot share the "
            f"{settings.profile_source} profile source, which lives inside one process; "
            "use sqlite or redis, or one worker"
        )
    return 1


def _prepare(settings: Settings, workers: int, std: Streams) -> tuple[Service, socket.socket] | int:
    """The service built (rules compiled and tested, source open, samples seeded) and the
    port bound for `workers`; or the exit status, said why."""
    from decider.server.workers import held, listener  # noqa: PLC0415
    from decider.wiring import build_service  # noqa: PLC0415

    try:
        service = build_service(settings)
    except RulesetError as exc:
        print(
            f"decider: refusing to start; the rules in {settings.rules_dir} have problems:",
            file=std.err,
        )
        print(exc, file=std.err)
        return 1
    refusal = _open_without_keys(settings, service.keys)
    if refusal:
        asyncio.run(service.source.aclose())
        print(refusal, file=std.err)
        return 1
    try:
        # several workers each listen; the supervisor only holds the port
        sock = (
            held(settings.host, settings.port)
            if workers > 1
            else listener(settings.host, settings.port, shared=False)
        )
    except OSError as exc:
        asyncio.run(service.source.aclose())
        print(
            f"decider: cannot listen on {settings.host}:{settings.port} "
            f"(DECIDER_HOST, DECIDER_PORT; --host, --port): {exc.strerror or exc}",
            file=std.err,
        )
        return 1
    return service, sock


def _announce(service: Service, sock: socket.socket, workers: int, std: Streams) -> None:
    ruleset = service.decider.ruleset
    for warning in ruleset.warnings:
        print(warning, file=std.out)
    host, port = sock.getsockname()[:2]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(
        f"decider: ruleset {ruleset.version} ({len(ruleset.segments)} segments, "
        f"{len(ruleset.placements)} placements, engine {ruleset.engine.name}), "
        f"profile source {service.settings.profile_source}"
        + (f", {workers} workers" if workers > 1 else "")
        + f"; listening on http://{address}",
        file=std.out,
        flush=True,
    )


def _serve_one(settings: Settings, std: Streams) -> int:
    from decider.logs import configure_logging  # noqa: PLC0415

    prepared = _prepare(settings, 1, std)
    if isinstance(prepared, int):
        return prepared
    service, sock = prepared
    configure_logging(settings.log_format)
    _announce(service, sock, 1, std)
    _run_uvicorn(service, sock, None)
    return 0


def _supervise(settings: Settings, env: Mapping[str, str], count: int, std: Streams) -> int:
    """Compile, seed and bind once here, then run `count` workers (decider.server.workers)."""
    from decider.logs import configure_logging  # noqa: PLC0415
    from decider.server.lastgood import LastGood  # noqa: PLC0415
    from decider.server.workers import Supervisor  # noqa: PLC0415

    prepared = _prepare(settings, count, std)
    if isinstance(prepared, int):
        return prepared
    service, sock = prepared
    asyncio.run(service.source.aclose())  # each worker opens its own
    configure_logging(settings.log_format)
    with sock, tempfile.TemporaryDirectory(prefix="decider-") as run_dir:
        # what the workers start from, whatever the files say by the time they do
        LastGood(Path(run_dir)).keep(settings.rules_dir, service.decider.ruleset.version)
        worker_env = {
            **env,
            "DECIDER_PORT": str(sock.getsockname()[1]),  # the one port 0 picked
            "DECIDER_PROFILE_SEED_SAMPLES": "false",  # seeded here, once
            "DECIDER_WORKERS": str(count),  # each knows how many answer with it
        }
        supervisor = Supervisor(
            count, [sys.executable, "-m", "decider.cli", "serve"], worker_env, Path(run_dir)
        )
        status = supervisor.run(ready=lambda: _announce(service, sock, count, std))
    if status:
        print("decider: the workers could not start or kept failing; see above", file=std.err)
    return status


def _work(settings: Settings, place: Place) -> int:
    """One of several workers: serve on a listener of its own on the supervisor's port,
    the rules its peers serve (decider.server.lastgood)."""
    from decider.logs import configure_logging  # noqa: PLC0415
    from decider.server.lastgood import LastGood  # noqa: PLC0415
    from decider.server.workers import listener  # noqa: PLC0415
    from decider.wiring import build_service, load_rules  # noqa: PLC0415

    configure_logging(settings.log_format, worker=place.index)
    kept = LastGood(place.run_dir)
    ruleset = kept.load(settings.rules_dir, lambda rules: load_rules(rules, settings.engine))
    service = build_service(
        settings,
        ruleset=ruleset,
        on_load=lambda loaded: kept.keep(settings.rules_dir, loaded.version),
    )
    sock = listener(settings.host, settings.port, shared=True)
    _run_uvicorn(service, sock, place)
    return 0


def _run_uvicorn(service: Service, sock: socket.socket, place: Place | None) -> None:
    # the web stack loads only for `serve`, so the other commands start fast
    import uvicorn  # noqa: PLC0415

    from decider.server.app import create_app  # noqa: PLC0415
    from decider.server.protocol import GuardedHttpToolsProtocol  # noqa: PLC0415

    settings = service.settings
    app = create_app(service, place)
    # what is built by now (rules, the web stack, modules) lives as long as the process: out
    # of the collector's sight, so a full collection walks only what requests leave
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        log_config=None,  # configure_logging's: JSON or text, no access log (client IPs)
        access_log=False,
        # idle and half-sent requests time out; headers are bounded
        http=GuardedHttpToolsProtocol.limited(settings.max_header_bytes),
        timeout_keep_alive=settings.idle_timeout_s,
        timeout_graceful_shutdown=25,  # requests in flight at SIGTERM get this long
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again once stopped
        uvicorn.Server(config).run(sockets=[sock])


def _open_without_keys(settings: Settings, keys: KeyRing) -> str | None:
    """Why the service must not listen where it was asked to, if it must not: an address
    other than loopback with no API keys, unless anonymous callers were allowed outright."""
    if keys or settings.allow_anonymous:
        return None
    try:
        infos = socket.getaddrinfo(settings.host, None, type=socket.SOCK_STREAM)
        loopback = all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)
    except (OSError, ValueError):
        loopback = False
    if loopback:
        return None
    return (
        f"decider: refusing to listen on {settings.host} with no API keys: anyone who reaches "
        "it could ask about anyone. Configure keys (DECIDER_API_KEYS or "
        "DECIDER_API_KEYS_FILE; `decider keys new` makes one), listen on 127.0.0.1, or set "
        "DECIDER_ALLOW_ANONYMOUS=true to let callers without a key decide (and do nothing else)"
    )


def _no_rules(rules_dir: Path) -> str:
    return (
        f"decider: {rules_dir} is not a directory of rule files; "
        f"`decider init {rules_dir}` writes the sample rules to start from"
    )


def _init(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    try:
        written = write_samples(args.rules_dir)
    except OSError as exc:
        print(f"decider: {exc}", file=std.err)
        return 1
    for path in written:
        print(f"wrote {path}", file=std.out)
    print(
        f"next: decider check {args.rules_dir} && decider serve --rules {args.rules_dir}",
        file=std.out,
    )
    return 0


def _check(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    settings = Settings.from_env(_with_flags(env, engine=args.engine))
    if not args.rules_dir.is_dir():
        print(_no_rules(args.rules_dir), file=std.err)
        return 2
    try:
        ruleset = compile_and_test(args.rules_dir, new_engine(settings.engine))
    except RulesetError as exc:
        for problem in sorted(exc.problems + exc.warnings):
            print(problem, file=std.out)
        count = len(exc.problems)
        summary = f"{count} problem{'s' if count != 1 else ''}"
        if exc.warnings:
            summary += f" and {len(exc.warnings)} warning{'s' if len(exc.warnings) != 1 else ''}"
        print(f"{summary} in {args.rules_dir}", file=std.out)
        if any(p.kind == "test_failure" for p in exc.problems):
            print(f"run `decider test {args.rules_dir}` to see each failing case", file=std.out)
        return 1
    for warning in ruleset.warnings:
        print(warning, file=std.out)
    experiments = [p.experiment for p in ruleset.placements.values() if p.experiment]
    print(
        f"ok: ruleset {ruleset.version}: {_count(ruleset.files, 'file')}, "
        f"{_count(ruleset.segments, 'segment')}, {_count(ruleset.placements, 'placement')}"
        + (f" ({_count(experiments, 'experiment')})" if experiments else "")
        + f", {_count(ruleset.suppressions, 'suppression')} (engine {settings.engine}"
        f"{_alike(settings, args.rules_dir)})"
        + (f", {_count(ruleset.warnings, 'warning')}" if ruleset.warnings else ""),
        file=std.out,
    )
    return 1 if args.strict and ruleset.warnings else 0


def _alike(settings: Settings, rules_dir: Path) -> str:
    others = [name for name in installed_engines() if name != settings.engine]
    if not others or not suite_files(rules_dir):
        return ""
    return f"; rule tests decided alike on {', '.join(others)}"


def _count(items: Sized, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _test(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    settings = Settings.from_env(_with_flags(env, engine=args.engine))
    ruleset = compile_ruleset(args.rules_dir, new_engine(settings.engine))
    results = run_suites(ruleset, args.rules_dir)
    failed = [r for r in results if not r.passed]
    for result in failed:
        print(format_result(result), file=std.out)
        print(file=std.out)
    if not results:
        print(f"no rule tests in {args.rules_dir / 'tests'}", file=std.out)
        return 1
    apart = disagreements(ruleset, args.rules_dir, results)
    for problem in apart:
        print(f"DISAGREE {problem}", file=std.out)
    engines = " and ".join(installed_engines())
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed (on {engines})"
    if apart:
        summary += f", {len(apart)} decided differently by the engines"
    print(summary, file=std.out)
    return 1 if failed or apart else 0


def _explain(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    settings = Settings.from_env(_with_flags(env, engine=args.engine))
    ruleset = compile_ruleset(args.rules_dir, new_engine(settings.engine))
    try:
        context = msgspec.json.decode(args.context, type=dict[str, Any])
    except msgspec.DecodeError as exc:
        print(f"decider: --context must be a JSON object: {exc}", file=std.err)
        return 2
    try:
        now = msgspec.convert(args.now, Instant) if args.now else utcnow()
    except msgspec.ValidationError as exc:
        print(f"decider: --now: {plain_types(str(exc))}", file=std.err)
        return 2
    profile = None
    if args.profile is not None:
        profile = read_yaml(args.profile, str(args.profile)).convert(Fixture)
    try:
        resolution = resolution_of(profile, schema=ruleset.schema)
    except TraitError as exc:
        print(f"decider: --profile: {exc}", file=std.err)
        return 2
    placements = (
        [args.placement]
        if args.placement
        else [p.id for p in ruleset.placements.values() if args.channel in (None, p.channel)]
    )
    consent = (
        tuple(p.strip() for p in args.consent.split(",") if p.strip())
        if args.consent is not None
        else None
    )
    decisions = [
        offline_decision(
            ruleset,
            resolution,
            placement=placement,
            now=now,
            channel=args.channel,
            context=context,
            consent=consent,
            gpc=args.gpc,
        )
        for placement in placements
    ]
    print(f"ruleset {ruleset.version} ({ruleset.engine.name}), now {now.isoformat()}", file=std.out)
    for decision in decisions:
        print(file=std.out)
        print(render(decision), file=std.out)
    return 0


class _Opened(NamedTuple):
    settings: Settings
    schema: TraitSchema | None
    store: ProfileStore


def _store(args: argparse.Namespace, env: Mapping[str, str]) -> _Opened:
    """The configured store, and the profile schema of the configured rules (if any)."""
    hashed = getattr(args, "email_sha256", None)
    if hashed is not None and not re.fullmatch(r"[0-9a-f]{64}", hashed):
        raise SettingsError(
            "--email-sha256 takes the lowercase hex SHA-256 of the lowercase address, "
            "never the address"
        )
    rules = getattr(args, "rules_dir", None)
    settings = Settings.from_env(_with_flags(env, profile_db=args.profile_db, rules_dir=rules))
    schema = read_profile_schema(settings.rules_dir) if settings.rules_dir.is_dir() else None
    return _Opened(settings, schema, open_store(settings, schema=schema, now=utcnow()))


def _import(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    if args.samples:
        with tempfile.TemporaryDirectory(prefix="decider-samples-") as scratch:
            args.file = Path(scratch) / "samples.jsonl"
            args.file.write_bytes(sample_lines(utcnow()))
            return _import_file(args, env, std)
    return _import_file(args, env, std)


def _import_file(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    settings, schema, store = _store(args, env)
    progress = _Progress(std.err) if std.err.isatty() else None

    async def run() -> ImportReport:
        try:
            return await import_file(
                args.file, store, schema=schema, replace=args.replace, progress=progress
            )
        finally:
            if progress is not None:
                progress.done()
            await store.aclose()

    try:
        report = asyncio.run(run())
    except OSError as exc:
        print(f"decider: cannot read {args.file}: {exc.strerror}", file=std.err)
        return 1
    except ImportFileError as exc:
        print(exc, file=std.out)
        print(f"nothing imported: {exc.count} problem(s) in {args.file}", file=std.out)
        return 1
    except (ProfileConflict, ProfileSourceError) as exc:
        atomic = isinstance(settings.profile, SqliteSettings)
        what = "nothing imported" if atomic else "the records before the failure are written"
        print(f"decider: import stopped, {what}: {exc}; run it again", file=std.err)
        return 1
    profile = settings.profile
    where = profile.db if isinstance(profile, SqliteSettings) else settings.profile_source
    print(
        f"imported {report.visitors} visitors and {report.accounts} accounts into {where}"
        + (f"; {report.moved} linked ids moved from other visitors" if report.moved else ""),
        file=std.out,
    )
    return 0


def _show(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    store = _store(args, env).store

    async def run() -> VisitorProfile | AccountProfile | None:
        try:
            return await _find(store, args)
        finally:
            await store.aclose()

    found = asyncio.run(run())
    if found is None:
        print(f"decider: no profile for that {_selector(args)}", file=std.err)
        return 1
    print(msgspec.json.format(msgspec.json.encode(found)).decode(), file=std.out)
    return 0


def _delete(args: argparse.Namespace, env: Mapping[str, str], std: Streams) -> int:
    store = _store(args, env).store

    async def run() -> tuple[VisitorProfile | AccountProfile | None, Change | None]:
        try:
            found = await _find(store, args)
            return found, await store.delete(type(found), found.id) if found else None
        finally:
            await store.aclose()

    found, change = asyncio.run(run())
    if found is None or change is None:
        print(f"decider: no profile for that {_selector(args)}", file=std.err)
        return 1
    if isinstance(found, VisitorProfile):
        print(f"deleted visitor {found.id} and its {len(change.aliases)} linked ids", file=std.out)
    else:
        print(f"deleted account {found.id}", file=std.out)
    return 0


async def _find(
    store: ProfileStore, args: argparse.Namespace
) -> VisitorProfile | AccountProfile | None:
    if args.account_id:
        return await store.account(args.account_id)
    visitor_id = args.visitor_id
    if args.user_id:
        visitor_id = await store.alias("user_id", args.user_id)
    elif args.email_sha256:
        visitor_id = await store.alias("email_sha256", args.email_sha256)
    return await store.visitor(visitor_id) if visitor_id else None


def _selector(args: argparse.Namespace) -> str:
    for name in ("visitor_id", "user_id", "email_sha256", "account_id"):
        if getattr(args, name):
            return name.replace("_", " ").replace("sha256", "hash")
    return "id"


class _Progress:
    """A progress line on a terminal: phase, percent, rewritten in place."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, phase: str, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        filled = 30 * percent // 100
        self._stream.write(f"\r{phase} [{'#' * filled}{'.' * (30 - filled)}] {percent:3d}%")
        self._stream.flush()

    def done(self) -> None:
        self._stream.write("\r\x1b[K")
        self._stream.flush()


if __name__ == "__main__":
    sys.exit(main())
