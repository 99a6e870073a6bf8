"""CEL for rules: one checked language, two engines that agree on what it means.

`syntax` parses, `check` decides what may load (on either engine), `values` and `evaluate`
are the pure-Python engine's meaning, `engines` puts both runtimes behind the core's Engine.
"""

from decider.rules.cel.engines import ENGINES, installed_engines, new_engine
from decider.rules.cel.evaluate import MAX_ITERATIONS
from decider.rules.cel.syntax import (
    CelCompileError,
    CelCompileErrors,
    Reference,
    caller_sized,
    references,
)

__all__ = [
    "ENGINES",
    "MAX_ITERATIONS",
    "CelCompileError",
    "CelCompileErrors",
    "Reference",
    "caller_sized",
    "installed_engines",
    "new_engine",
    "references",
]
