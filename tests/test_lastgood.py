"""The rules the workers serve, kept in the run directory (decider.server.lastgood): a file
that appears after the load is no part of them, and does not stop them being kept."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from decider.rules.cel import new_engine
from decider.rules.compiler import compile_ruleset
from decider.server.lastgood import LastGood


def test_a_pipe_put_in_the_rules_after_the_load_is_not_copied(
    rules_copy: Path, tmp_path: Path
) -> None:
    """shutil refuses to copy a pipe: the copy failed, and a worker started later served
    the files on disk instead of what its peers serve."""
    version = compile_ruleset(rules_copy, new_engine("cel-expr")).version
    os.mkfifo(rules_copy / "late.yaml")
    kept = LastGood(tmp_path / "run")
    copying = threading.Thread(target=kept.keep, args=(rules_copy, version), daemon=True)
    copying.start()
    copying.join(timeout=20)
    assert not copying.is_alive()
    current = kept.current()
    assert current is not None
    assert current.name == version
    assert (current / "b2b.yaml").read_bytes() == (rules_copy / "b2b.yaml").read_bytes()
    assert not (current / "late.yaml").exists()
