"""The statistics of the report, each from a maintained library (statsmodels, scipy).

- Absolute lift (treatment rate minus holdout rate): Newcombe's hybrid score interval, from
  the two Wilson score intervals; sound for small counts and for rates of 0 and 1.
- Relative lift (rate ratio minus one): the log method (Katz): a normal interval for the log
  of the ratio. Undefined while either side has no conversions.
- Units needed: the normal approximation for two proportions at the current split of units
  between the arms (variance pooled under the null, separate under the alternative).
- Two lifts compared (merge candidates): a z-test of their difference, each lift's standard
  error the Wald one; several (split candidates): Cochran's Q, which for two is that z-test
  squared.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from scipy.stats import chi2, norm
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    samplesize_proportions_2indep_onetail,
)

ALPHA = 0.05
POWER = 0.8


class Bounds(NamedTuple):
    estimate: float
    low: float
    high: float


class Lift(NamedTuple):
    """One arm against the holdout."""

    absolute: Bounds
    relative: Bounds | None
    se: float  # Wald standard error of the absolute lift


def lift(converted: int, units: int, holdout_converted: int, holdout_units: int) -> Lift:
    """An arm's lift over the holdout, with 95% intervals; both sides must have units."""
    rate, base = converted / units, holdout_converted / holdout_units
    low, high = confint_proportions_2indep(
        converted, units, holdout_converted, holdout_units, method="newcomb", compare="diff"
    )
    relative = None
    if converted and holdout_converted:
        ratio_low, ratio_high = confint_proportions_2indep(
            converted, units, holdout_converted, holdout_units, method="log", compare="ratio"
        )
        relative = Bounds(rate / base - 1, float(ratio_low) - 1, float(ratio_high) - 1)
    se = math.sqrt(rate * (1 - rate) / units + base * (1 - base) / holdout_units)
    return Lift(Bounds(rate - base, float(low), float(high)), relative, se)


def units_needed(difference: float, base: float, holdout_per_treated: float) -> tuple[int, int]:
    """Units (treatment, holdout) to detect an absolute lift of `difference` over a holdout
    rate of `base` with a two-sided test at ALPHA and POWER, keeping the arms' proportion."""
    treated = float(
        samplesize_proportions_2indep_onetail(
            difference, base, POWER, ratio=holdout_per_treated, alpha=ALPHA
        )
    )
    return math.ceil(treated), math.ceil(treated * holdout_per_treated)


class Test(NamedTuple):
    statistic: float
    p_value: float


def difference(first: Lift, second: Lift) -> tuple[Bounds, Test]:
    """The difference of two lifts, with its 95% interval and the two-sided z-test."""
    estimate = first.absolute.estimate - second.absolute.estimate
    se = math.hypot(first.se, second.se)
    if se == 0:
        return Bounds(estimate, estimate, estimate), Test(0.0, 1.0 if estimate == 0 else 0.0)
    z = estimate / se
    half = float(norm.ppf(1 - ALPHA / 2)) * se
    return Bounds(estimate, estimate - half, estimate + half), Test(z, float(2 * norm.sf(abs(z))))


def heterogeneity(lifts: list[Lift]) -> Test:
    """Cochran's Q: do these lifts (of sub-groups with a standard error) differ?"""
    weights = [1 / one.se**2 for one in lifts]
    pooled = sum(w * one.absolute.estimate for w, one in zip(weights, lifts, strict=True))
    pooled /= sum(weights)
    q = sum(
        w * (one.absolute.estimate - pooled) ** 2 for w, one in zip(weights, lifts, strict=True)
    )
    return Test(q, float(chi2.sf(q, len(lifts) - 1)))
