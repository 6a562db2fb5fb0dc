"""Paired statistics for comparing base and adapter on the same items."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable


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


def bootstrap(n: int, statistic: Callable[[list[int]], float], resamples: int = 1000, seed: int = 0) -> list[float]:
    """``statistic`` of ``resamples`` resamples of the item indices 0..n-1 (with replacement), sorted.

    A paired comparison computes both sides' values from the same indices, so
    each resample keeps items paired. Seeded: the same items give the same
    samples, and the report diffs cleanly.
    """
    if n == 0:
        return [0.0]
    rng = random.Random(seed)
    return sorted(statistic([rng.randrange(n) for _ in range(n)]) for _ in range(resamples))


def percentile_interval(samples: list[float], level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of sorted samples, indexed as ``paired_bootstrap_ci`` does."""
    tail = (1 - level) / 2
    last = len(samples) - 1
    return (samples[int(tail * last)], samples[int(round((1 - tail) * last))])


def bootstrap_p_value(samples: list[float]) -> float:
    """Two-sided bootstrap p-value of "the statistic is 0": twice the smaller share of samples on
    either side of 0 (ties counted on both), with the +1 that keeps it above 0 for a finite sample."""
    below = sum(s <= 0 for s in samples)
    above = sum(s >= 0 for s in samples)
    return min(1.0, 2 * (min(below, above) + 1) / (len(samples) + 1))


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    count: int
    confidence: float  # mean top-label confidence of the items in the bin (0 when empty)
    accuracy: float  # share of them whose top label is right (0 when empty)


def confidence_bin(confidence: float, bins: int) -> int:
    """Equal-width bins over [0, 1]: bin k holds [k/bins, (k+1)/bins), the last one also 1.0.

    Rounded to 9 decimals first, so a confidence one rounding step short of an edge
    (a softmax giving 0.59999999999 for 0.6) lands in the bin its value names.
    """
    return min(bins - 1, max(0, math.floor(round(confidence * bins, 9))))


def reliability(confidences: list[float], correct: list[bool], bins: int = 10) -> list[CalibrationBin]:
    """Every bin, empty ones included, with its items' mean confidence and accuracy."""
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(confidences):
        members[confidence_bin(c, bins)].append(i)
    table = []
    for k, rows in enumerate(members):
        count = len(rows)
        conf = sum(confidences[i] for i in rows) / count if count else 0.0
        acc = sum(bool(correct[i]) for i in rows) / count if count else 0.0
        table.append(CalibrationBin(k / bins, (k + 1) / bins, count, conf, acc))
    return table


def expected_calibration_error(confidences: list[float], correct: list[bool], bins: int = 10) -> float:
    """ECE: sum over equal-width bins of (items in bin / items) * |accuracy - mean confidence|."""
    n = len(confidences)
    if n == 0:
        return 0.0
    return sum(b.count / n * abs(b.accuracy - b.confidence) for b in reliability(confidences, correct, bins))


def brier_score(probabilities: list[list[float]], gold: list[int | None]) -> float:
    """Multi-class Brier score: mean over items of sum over labels of (p - [label is gold])^2, in [0, 2].

    A gold index of None (an expected label outside the set) counts every label as wrong.
    """
    if not probabilities:
        return 0.0
    total = 0.0
    for probs, g in zip(probabilities, gold):
        total += sum((p - (1.0 if k == g else 0.0)) ** 2 for k, p in enumerate(probs))
    return total / len(probabilities)
