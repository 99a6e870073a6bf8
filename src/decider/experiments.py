"""Holdouts and splits: which arm of a placement's experiment a unit is in.

Pure and deterministic: the same unit gets the same arm on every replica, worker and
restart, from nothing but the experiment's salt and the unit. The hash is XXH3, 64 bits,
seed 0 (xxHash 0.8, PyPI `xxhash`'s `xxh3_64_intdigest`), of the UTF-8 bytes

    salt NUL label NUL kind ":" id          e.g. "home_hero_holdout\\0holdout\\0account:acc-1"

`label` is `holdout` for the holdout, else an arm's id. Salts, arm ids and profile ids hold no
NUL (checked at load and at import), so no two inputs run together.

- Holdout: the unit's holdout point is hash / 2^64, in [0, 1); it is held out when the point
  is below the share (10% holds out points below 0.1), compared exactly in integers. The
  point does not depend on the arms, so changing the share moves units only across the line.
- Arms (weighted rendezvous hashing): each arm scores weight / -ln(u), u the arm's own hash
  in (0, 1); the best score wins. Raising one arm's weight raises only its scores, so units
  move only into it, lowering only out of it; a new arm only takes units. Nobody else moves.

A unit is an account or a visitor id, as the resolver stitched it, or an anonymous visitor's
own visitor_id (`unit_of`); its raw id is handed to the service for the exposure record,
which writes a keyed hash of it, never the id, and is never in the answer.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Literal

import msgspec
from xxhash import xxh3_64_intdigest

from decider.model import Variant
from decider.profile import Resolution
from decider.reasons import Reason, ReasonCode

HOLDOUT = "holdout"
CONTROL = "control"
RESERVED = frozenset({HOLDOUT, CONTROL})  # arm names no treatment may take
UnitKind = Literal["account", "visitor"]
SCALE = 2**64
_MANTISSA = 2**52  # u is taken from the hash's top 52 bits: strictly between 0 and 1 as a float
_SHARE = re.compile(r"^(\d{1,3}(?:\.\d+)?)\s*%$")


def parse_share(text: object) -> Fraction | str:
    """A holdout share written as a percentage ("10%", "2.5%"), exactly; or why not."""
    if not isinstance(text, str) or not (match := _SHARE.match(text.strip())):
        return f"write the share as a percentage from 0% to 100%, e.g. 10%; not {text!r}"
    share = Fraction(match[1])
    if share > 100:
        return f"{text} is more than 100%"
    return share


def threshold(share: Fraction) -> int:
    """The hashes held out at `share` percent are those below this: point < share / 100."""
    return math.ceil(share * SCALE / 100)


def key(salt: str, label: str) -> bytes:
    """What every hash of `salt` and `label` starts with."""
    return f"{salt}\0{label}\0".encode("utf-8", "surrogatepass")


def unit_bytes(kind: UnitKind, raw_id: str) -> bytes:
    """The unit as hashed. Ids arrive through JSON, which holds no lone surrogate; were one
    to come, it is encoded as it stands rather than fail a decision."""
    return f"{kind}:{raw_id}".encode("utf-8", "surrogatepass")


def hashed(prefix: bytes, unit: bytes) -> int:
    return xxh3_64_intdigest(prefix + unit)


class Unit(msgspec.Struct, frozen=True, gc=False):
    """What an experiment bucketed: an account or a visitor, by its raw id (for the service
    to hash into the exposure record; never in an answer or a record itself)."""

    kind: UnitKind
    id: str


class Arm(msgspec.Struct, frozen=True):
    """`control` (the segment's own variant) or a treatment (its variant's id); `key` is
    what its rendezvous hashes start with."""

    id: str
    weight: int
    variant: Variant
    key: bytes


class Split(msgspec.Struct, frozen=True):
    """One segment's part of an experiment: its holdout share (percent; `holdout`, the same
    as a fraction) and the hashes below `threshold` it holds out, its arms (control alone: no
    split), and the reason for each unit kind and arm, written once at load."""

    share: Fraction
    holdout: float
    threshold: int
    arms: tuple[Arm, ...]
    reasons: dict[tuple[UnitKind, str], Reason] = {}


class Experiment(msgspec.Struct, frozen=True):
    """A placement's experiment: the segments it buckets (those whose holdout is above 0% or
    that have treatments), by `unit`; and why a decision is not bucketed, written once."""

    id: str
    salt: str
    unit: UnitKind
    splits: dict[str, Split]
    holdout_key: bytes
    unconsented: Reason
    nobody: Reason


def new_split(share: Fraction, arms: tuple[tuple[str, int, Variant], ...], salt: str) -> Split:
    """A segment's split at `share` percent over `arms` (id, weight, variant), control first."""
    return Split(
        share,
        float(share / 100),
        threshold(share),
        tuple(Arm(arm, weight, variant, key(salt, arm)) for arm, weight, variant in arms),
    )


def new_experiment(id: str, salt: str, unit: UnitKind, splits: dict[str, Split]) -> Experiment:
    """The experiment `id`, its splits by segment given their reasons."""
    told = {
        segment: msgspec.structs.replace(split, reasons=_reasons(id, segment, split))
        for segment, split in splits.items()
    }
    return Experiment(
        id,
        salt,
        unit,
        told,
        key(salt, HOLDOUT),
        Reason(
            ReasonCode.EXPERIMENT_NOT_BUCKETED,
            f"{id}: without the channel's consent nobody is bucketed by profile ids; served as "
            "without the experiment",
        ),
        Reason(
            ReasonCode.EXPERIMENT_NOT_BUCKETED,
            f"{id}: no {'account or visitor' if unit == 'account' else 'visitor'} to bucket (no "
            "visitor_id, or the profile could not be fetched); served as without the experiment",
        ),
    )


def _reasons(id: str, segment: str, split: Split) -> dict[tuple[UnitKind, str], Reason]:
    reasons: dict[tuple[UnitKind, str], Reason] = {}
    kinds: tuple[UnitKind, ...] = ("account", "visitor")
    for kind in kinds:
        where = f"{id}, by {kind}"
        reasons[kind, HOLDOUT] = Reason(
            ReasonCode.EXPERIMENT_HOLDOUT,
            f"{where}: in the {percent(split.share)} holdout of {segment}; the default variant "
            "is served",
        )
        for arm in split.arms:
            if arm.id == CONTROL:
                reasons[kind, CONTROL] = Reason(
                    ReasonCode.EXPERIMENT_CONTROL,
                    f"{where}: in the control arm of {segment}; its variant is served",
                )
            else:
                reasons[kind, arm.id] = Reason(
                    ReasonCode.EXPERIMENT_TREATMENT,
                    f"{where}: in the treatment arm {arm.id} of {segment}; its variant is served",
                )
    return reasons


def unit_of(kind: UnitKind, resolution: Resolution, cookie: str | None = None) -> Unit | None:
    """The account the person belongs to, for an account experiment, when they have one;
    else the stitched visitor; else, when the ids name no profile, the request's `cookie`
    (its visitor_id: an anonymous visitor is bucketed as itself); None for nobody known or
    a profile that could not be fetched (who it is, and so its unit, is not known)."""
    if kind == "account" and resolution.account is not None:
        return Unit("account", resolution.account.id)
    if resolution.visitor is not None:
        return Unit("visitor", resolution.visitor.id)
    if cookie and resolution.status == "unknown":
        return Unit("visitor", cookie)
    return None


def holdout_point(salt: str, unit: Unit) -> float:
    """Where the unit falls on the holdout line, in [0, 1): held out below the share."""
    return hashed(key(salt, HOLDOUT), unit_bytes(unit.kind, unit.id)) / SCALE


def rendezvous(arms: tuple[Arm, ...], unit: bytes) -> Arm:
    """The arm with the best weighted score for `unit` (ties: the first)."""
    best, best_score = arms[0], -1.0
    for arm in arms:
        u = ((xxh3_64_intdigest(arm.key + unit) >> 12) + 0.5) / _MANTISSA
        score = arm.weight / -math.log(u)
        if score > best_score:
            best, best_score = arm, score
    return best


class Assignment(msgspec.Struct, frozen=True, gc=False):
    """Where a unit landed: its arm, the variant served, its holdout point, and why."""

    experiment: str
    arm: str
    variant: Variant
    unit: Unit
    point: float
    holdout: float  # the share, as a fraction
    reason: Reason


def assign(experiment: Experiment, split: Split, unit: Unit, default: Variant) -> Assignment:
    """The arm of `unit` in one segment's `split`: held out (the placement's `default`) when
    its point is below the share, else its rendezvous arm (control when there is no other)."""
    raw = f"{unit.kind}:{unit.id}".encode("utf-8", "surrogatepass")  # unit_bytes, inlined
    point = xxh3_64_intdigest(experiment.holdout_key + raw)
    if point < split.threshold:
        arm, variant = HOLDOUT, default
    else:
        chosen = rendezvous(split.arms, raw) if len(split.arms) > 1 else split.arms[0]
        arm, variant = chosen.id, chosen.variant
    reason = split.reasons[unit.kind, arm]
    return Assignment(experiment.id, arm, variant, unit, point / SCALE, split.holdout, reason)


def bucket(
    experiment: Experiment,
    segment: str,
    resolution: Resolution,
    default: Variant,
    *,
    consented: bool,
    cookie: str | None = None,
) -> Assignment | Reason | None:
    """The assignment of a decision for `segment`, or why it has none (no consent to bucket
    by profile ids, or nobody known); None when the experiment leaves the segment out.
    `cookie`: the request's visitor_id, the unit of a visitor no profile knows."""
    split = experiment.splits.get(segment)
    if split is None:
        return None
    if not consented:
        return experiment.unconsented
    unit = unit_of(experiment.unit, resolution, cookie)
    if unit is None:
        return experiment.nobody
    return assign(experiment, split, unit, default)


def percent(share: Fraction) -> str:
    """A share as written: 10%, 2.5%."""
    text = f"{float(share):.6f}".rstrip("0").rstrip(".")
    return f"{text}%"
