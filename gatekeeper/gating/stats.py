"""Paired statistics for comparing base and adapter on the same items."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedComparison:
    n: int
    base_rate: float
    adapter_rate: float
    delta: float  # adapter - base
    ci_low: float
    ci_high: float
    p_value: float  # exact McNemar, two-sided
    to_fail: tuple[str, ...]  # passed on the base, failed on the adapter
    to_pass: tuple[str, ...]  # failed on the base, passed on the adapter


def mcnemar_exact(to_fail: int, to_pass: int) -> float:
    """Two-sided exact McNemar test: a binomial test on the discordant pairs."""
    discordant = to_fail + to_pass
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(to_fail, to_pass) + 1)) / 2**discordant
    return min(1.0, 2 * tail)


def paired_bootstrap_ci(
    base: list[bool], adapter: list[bool], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of (adapter - base) accuracy, resampling items in pairs.

    Seeded, so the same outcomes always give the same interval (reports must
    diff cleanly).
    """
    n = len(base)
    if n == 0:
        return (0.0, 0.0)
    diffs = [int(a) - int(b) for a, b in zip(adapter, base)]
    rng = random.Random(seed)
    stats = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return (stats[int(tail * (resamples - 1))], stats[int(round((1 - tail) * (resamples - 1)))])


def compare_paired(ids: list[str], base: list[bool], adapter: list[bool]) -> PairedComparison:
    n = len(ids)
    to_fail = tuple(i for i, b, a in zip(ids, base, adapter) if b and not a)
    to_pass = tuple(i for i, b, a in zip(ids, base, adapter) if a and not b)
    base_rate = sum(base) / n if n else 0.0
    adapter_rate = sum(adapter) / n if n else 0.0
    low, high = paired_bootstrap_ci(base, adapter)
    return PairedComparison(
        n, base_rate, adapter_rate, adapter_rate - base_rate, low, high,
        mcnemar_exact(len(to_fail), len(to_pass)), to_fail, to_pass,
    )


def smallest_detectable_n(margin: float, alpha: float = 0.05) -> int:
    """Fewest items for which even an all-discordant outcome could show ``margin`` significantly.

    With k discordant pairs all in one direction the exact McNemar p is 2 / 2**k,
    so at least k = ceil(log2(2 / alpha)) flips are needed, and they must be at
    most ``margin`` of the set for a margin-sized change.
    """
    flips = math.ceil(math.log2(2 / alpha))
    return math.ceil(flips / margin) if margin > 0 else flips
