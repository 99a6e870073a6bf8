"""decider: serve decisions; check, test and explain rules; import profiles.

Every command runs the same core as the server, so what `check` accepts is what serves.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from decider.cel import ENGINES, new_engine
from decider.compiler import compile_ruleset
from decider.errors import DeciderError, ImportFileError, RulesetError
from decider.explain import Fixture, offline_decision, render, resolution_of
from decider.model import Instant
from decider.rules import read_yaml
from decider.service import utcnow
from decider.settings import Settings, SettingsError
from decider.store import SqliteProfileStore, parse_profiles
from decider.suites import compile_and_test, format_result, run_suites


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    env = os.environ if environ is None else environ
    stdout = out or sys.stdout
    args = _parser().parse_args(argv)
    try:
        result: int = args.run(args, env, stdout)
    except (SettingsError, DeciderError) as exc:
        print(f"decider: {exc}", file=stdout if out else sys.stderr)
        return 2
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decider", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--rules", dest="rules_dir", help="rules directory [DECIDER_RULES_DIR]")
    serve.add_argument("--host", help="listen address [DECIDER_HOST, 127.0.0.1]")
    serve.add_argument("--port", type=int, help="listen port [DECIDER_PORT, 8080]")
    serve.add_argument("--engine", choices=ENGINES, help="CEL engine [DECIDER_ENGINE, cel-expr]")
    serve.add_argument("--profile-db", help="SQLite profile store [DECIDER_PROFILE_DB]")
    serve.set_defaults(run=_serve)

    check = commands.add_parser(
        "check", help="compile, lint and test a rules directory, as the server loads it"
    )
    check.add_argument("rules_dir", type=Path)
    check.add_argument("--engine", choices=ENGINES, default=None)
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(run=_check)

    test = commands.add_parser("test", help="run the rule test suites in RULES_DIR/tests")
    test.add_argument("rules_dir", type=Path)
    test.add_argument("--engine", choices=ENGINES, default=None)
    test.set_defaults(run=_test)

    explain = commands.add_parser(
        "explain", help="explain a decision for a profile, offline, in words a marketer reads"
    )
    explain.add_argument("rules_dir", type=Path)
    explain.add_argument(
        "--profile",
        type=Path,
        help='YAML or JSON file: {"visitor": {...}, "account": {...}} (default: unknown visitor)',
    )
    explain.add_argument("--context", default="{}", help="the request context, as JSON")
    explain.add_argument("--now", help="the decision time, RFC 3339 (default: now)", default=None)
    explain.add_argument("--channel", choices=("web", "email"))
    explain.add_argument("--placement", help="one placement (default: every one, of --channel)")
    explain.add_argument(
        "--consent", help="the banner's granted purposes, comma-separated (default: none sent)"
    )
    explain.add_argument("--gpc", action="store_true", help="as if Sec-GPC: 1 was sent")
    explain.add_argument("--engine", choices=ENGINES, default=None)
    explain.set_defaults(run=_explain)

    profiles = commands.add_parser("profiles", help="manage the embedded profile store")
    profile_commands = profiles.add_subparsers(required=True, metavar="ACTION")
    load = profile_commands.add_parser("import", help="import a JSONL file of profiles")
    load.add_argument("file", type=Path)
    load.add_argument("--db", dest="profile_db", help="SQLite file [DECIDER_PROFILE_DB]")
    load.set_defaults(run=_import)
    return parser


def _serve(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    # the web stack loads only for `serve`, so `check` and `profiles` start fast
    import uvicorn  # noqa: PLC0415

    from decider.app import create_app  # noqa: PLC0415

    settings = Settings.from_env(
        env,
        rules_dir=args.rules_dir,
        host=args.host,
        port=args.port,
        engine=args.engine,
        profile_db=args.profile_db,
    )
    try:
        app = create_app(settings)
    except RulesetError as exc:
        print(
            f"decider: refusing to start; the rules in {settings.rules_dir} have problems:",
            file=out,
        )
        print(exc, file=out)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    ruleset = app.state.decider.ruleset
    for warning in ruleset.warnings:
        print(warning, file=out)
    print(
        f"decider: ruleset {ruleset.version} ({len(ruleset.segments)} segments, "
        f"{len(ruleset.placements)} placements, engine {ruleset.engine.name}); "
        f"listening on http://{settings.host}:{settings.port}",
        file=out,
    )
    # no access log: it would write client IP addresses, which are personal data
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0


def _check(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = Settings.from_env(env, engine=args.engine)
    if not args.rules_dir.is_dir():
        print(f"decider: {args.rules_dir} is not a directory of rule files", file=out)
        return 2
    try:
        ruleset = compile_and_test(args.rules_dir, new_engine(settings.engine))
    except RulesetError as exc:
        for problem in sorted(exc.problems + exc.warnings):
            print(problem, file=out)
        count = len(exc.problems)
        summary = f"{count} problem{'s' if count != 1 else ''}"
        if exc.warnings:
            summary += f" and {len(exc.warnings)} warning{'s' if len(exc.warnings) != 1 else ''}"
        print(f"{summary} in {args.rules_dir}", file=out)
        if any("rule test" in p.message for p in exc.problems):
            print(f"run `decider test {args.rules_dir}` to see each failing case", file=out)
        return 1
    for warning in ruleset.warnings:
        print(warning, file=out)
    print(
        f"ok: ruleset {ruleset.version}: {len(ruleset.files)} files, "
        f"{len(ruleset.segments)} segments, {len(ruleset.placements)} placements, "
        f"{len(ruleset.suppressions)} suppressions (engine {settings.engine})"
        + (f", {len(ruleset.warnings)} warnings" if ruleset.warnings else ""),
        file=out,
    )
    return 1 if args.strict and ruleset.warnings else 0


def _test(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = Settings.from_env(env, engine=args.engine)
    ruleset = compile_ruleset(args.rules_dir, new_engine(settings.engine))
    results = run_suites(ruleset, args.rules_dir)
    failed = [r for r in results if not r.passed]
    for result in failed:
        print(format_result(result), file=out)
        print(file=out)
    if not results:
        print(f"no rule tests in {args.rules_dir / 'tests'}", file=out)
        return 1
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed", file=out)
    return 1 if failed else 0


def _explain(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = Settings.from_env(env, engine=args.engine)
    ruleset = compile_ruleset(args.rules_dir, new_engine(settings.engine))
    try:
        context = msgspec.json.decode(args.context, type=dict[str, Any])
        now = msgspec.convert(args.now, Instant) if args.now else utcnow()
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(
            f"decider: --context must be a JSON object, --now RFC 3339 with an offset: {exc}",
            file=out,
        )
        return 2
    profile = None
    if args.profile is not None:
        profile = read_yaml(args.profile, str(args.profile)).convert(Fixture)
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
            resolution_of(profile),
            placement=placement,
            now=now,
            channel=args.channel,
            context=context,
            consent=consent,
            gpc=args.gpc,
        )
        for placement in placements
    ]
    print(f"ruleset {ruleset.version} ({ruleset.engine.name}), now {now.isoformat()}", file=out)
    for decision in decisions:
        print(file=out)
        print(render(decision), file=out)
    return 0


def _import(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = Settings.from_env(env, profile_db=args.profile_db)
    try:
        records = parse_profiles(args.file.read_bytes(), str(args.file))
    except OSError as exc:
        print(f"decider: cannot read {args.file}: {exc.strerror}", file=out)
        return 1
    except ImportFileError as exc:
        print(exc, file=out)
        print(f"nothing imported: {len(exc.problems)} bad line(s) in {args.file}", file=out)
        return 1
    visitors, accounts = SqliteProfileStore(settings.profile_db).import_records(records)
    print(
        f"imported {visitors} visitors and {accounts} accounts into {settings.profile_db}", file=out
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
