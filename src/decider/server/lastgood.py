"""The rules the workers serve, kept whole in the run directory, for workers that start later.

A worker that replaces one that died must serve what its peers serve: not the files on disk,
which may hold an edit the others refused (then it could not start at all, and the
supervisor would give up on a service that was serving fine), or one they have not reloaded
yet (with file watching off). So every ruleset a worker swaps in, and the one the supervisor
started with, is copied into the run directory, checked against its version, and named
`current`; a worker starts from the files on disk when they are that version, else from the
copy, its files named as on disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from decider.errors import RulesetError
from decider.rules.compiler import directory_version
from decider.rules.files import revision_dir, shown_as
from decider.ruleset import CompiledRuleset

log = logging.getLogger("decider")

Load = Callable[[Path], CompiledRuleset]


def _unreadable(directory: str, names: list[str]) -> set[str]:
    """What the copy would fail at (shutil refuses a pipe or a device; a symlink to nothing
    cannot be read): put there after the load, so no part of the ruleset kept, and without
    it the ruleset is kept."""
    here = Path(directory)
    return {name for name in names if not ((here / name).is_file() or (here / name).is_dir())}


class LastGood:
    """The copies under `run_dir/rules`, the one serving named `current`."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir / "rules"

    def keep(self, rules_dir: Path, version: str) -> None:
        """Copy the revision of `rules_dir` being read now as `version`, and name it current;
        nothing, if the files changed since they were read as that version. Best effort: a
        copy that cannot be written is logged, and workers start from the files on disk."""
        try:
            self._keep(rules_dir, version)
        except OSError as exc:
            log.warning("cannot keep ruleset %s in %s: %s", version, self.root, exc.strerror)

    def _keep(self, rules_dir: Path, version: str) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.root / version
        if not target.is_dir():
            staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
            try:
                source = revision_dir(rules_dir)
                shutil.copytree(source, staging, dirs_exist_ok=True, ignore=_unreadable)
                if directory_version(staging) != version:  # edited since: the next reload keeps it
                    return
                os.rename(staging, target)  # fails if another worker kept it first
            except OSError:
                pass
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        link = self.root / f".current-{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(version)
        os.replace(link, self.root / "current")

    def current(self) -> Path | None:
        path = self.root / "current"
        return path.resolve() if path.is_dir() else None

    def load(self, rules_dir: Path, load: Load) -> CompiledRuleset:
        """The ruleset a worker starts with: the files of `rules_dir` if they are what the
        others serve (or nothing is kept yet), else the copy of what they serve. Raises
        RulesetError when neither loads."""
        kept = self.current()
        try:
            on_disk: CompiledRuleset | None = load(rules_dir)
        except RulesetError:
            if kept is None:
                raise
            on_disk = None
        if kept is None or (on_disk is not None and on_disk.version == kept.name):
            assert on_disk is not None
            return on_disk
        with shown_as(kept, revision_dir(rules_dir)):
            ruleset = load(kept)
        log.warning(
            "serving ruleset %s, as the other workers do: the rules in %s are %s, which they "
            "have not reloaded (a reload brings every worker to them)",
            ruleset.version,
            rules_dir,
            "refused" if on_disk is None else on_disk.version,
            extra={"event": "start_from_kept", "ruleset": ruleset.version},
        )
        return ruleset
