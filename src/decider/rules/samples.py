"""The bundled sample ruleset (the repository's `rules/`, shipped inside the wheel as
`decider/samples/rules`), and `decider init`, which copies it out to start from."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGED = "samples/rules"


def sample_rules() -> Traversable:
    """The sample rules: inside an installed wheel, or the source tree's `rules/`."""
    packaged = resources.files("decider").joinpath(PACKAGED)
    if packaged.is_dir():
        return packaged
    # an editable install or a checkout: src/decider/rules/samples.py -> the repository root
    return Path(__file__).resolve().parents[3] / "rules"


def write_samples(target: Path) -> list[Path]:
    """Copy the sample rules, their schema and their tests into `target`, which must be new
    or empty. Returns the files written. Raises FileExistsError otherwise."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty directory")
    written: list[Path] = []
    for folder, into in _folders(sample_rules(), target):
        into.mkdir(parents=True, exist_ok=True)
        for item in sorted(folder.iterdir(), key=lambda t: t.name):
            if item.is_file() and item.name.endswith(".yaml"):
                path = into / item.name
                path.write_bytes(item.read_bytes())
                written.append(path)
    return written


def _folders(source: Traversable, target: Path) -> list[tuple[Traversable, Path]]:
    return [(source, target), (source.joinpath("tests"), target / "tests")]
