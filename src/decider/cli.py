"""The `decider` command: serve, check rules, import profiles. Same core as the server."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from decider.cel import ENGINES, new_engine
from decider.compiler import compile_ruleset
from decider.errors import DeciderError, ImportFileError, RulesetError
from decider.settings import Settings, SettingsError
from decider.store import SqliteProfileStore, parse_profiles


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

    check = commands.add_parser("check", help="compile a rules directory; print every problem")
    check.add_argument("rules_dir", type=Path)
    check.add_argument("--engine", choices=ENGINES, default=None)
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(run=_check)

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
        print(f"decider: refusing to start; the rules in {settings.rules_dir} have problems:")
        print(exc, file=out)
        return 1
    ruleset = app.state.decider.ruleset
    print(
        f"decider: ruleset {ruleset.version} ({len(ruleset.segments)} segments, "
        f"{len(ruleset.placements)} placements, engine {ruleset.engine.name}); "
        f"listening on http://{settings.host}:{settings.port}",
        file=out,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _check(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = Settings.from_env(env, engine=args.engine)
    try:
        ruleset = compile_ruleset(args.rules_dir, new_engine(settings.engine))
    except RulesetError as exc:
        print(exc, file=out)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} in {args.rules_dir}", file=out)
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
