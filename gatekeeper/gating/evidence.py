"""Helpers gates share to turn per-item outcomes into paired statistics and evidence."""

from __future__ import annotations

from typing import Any

from gatekeeper.bundle.goldens import GoldenItem
from gatekeeper.gating.result import Example, Paired
from gatekeeper.gating.stats import compare_paired, smallest_detectable_n


def paired_result(
    ids: list[str], base_ok: list[bool], adapter_ok: list[bool], margin: float, alpha: float = 0.05
):
    """A paired comparison and its report, with a note when the set is too small for the rule."""
    comparison = compare_paired(ids, base_ok, adapter_ok)
    needed = smallest_detectable_n(margin, alpha)
    too_small = (
        f"{comparison.n} items cannot show a {margin:.0%} change at alpha={alpha}; at least {needed} are needed"
        if comparison.n < needed
        else None
    )
    report = Paired(
        n=comparison.n,
        p_value=round(comparison.p_value, 6),
        ci_low=round(comparison.ci_low, 6),
        ci_high=round(comparison.ci_high, 6),
        flipped_to_fail=list(comparison.to_fail),
        flipped_to_pass=list(comparison.to_pass),
        too_small=too_small,
    )
    return comparison, report


def worst_examples(
    items: list[GoldenItem],
    base_out: list[str],
    adapter_out: list[str],
    base_ok: list[bool],
    adapter_ok: list[bool],
    notes: list[str],
    limit: int,
) -> list[Example]:
    """Regressions first (base right, adapter wrong), then the adapter's other failures, in set order."""

    def rank(i: int) -> int:
        if base_ok[i] and not adapter_ok[i]:
            return 0
        if not adapter_ok[i]:
            return 1
        return 2

    chosen = sorted((i for i in range(len(items)) if rank(i) < 2), key=lambda i: (rank(i), i))[:limit]
    return [
        Example(
            id=items[i].id,
            input=items[i].input,
            expected=items[i].expected,
            base_output=base_out[i],
            adapter_output=adapter_out[i],
            base_ok=base_ok[i],
            adapter_ok=adapter_ok[i],
            note=notes[i],
        )
        for i in chosen
    ]


def rate(values: list[bool]) -> float:
    return round(sum(values) / len(values), 6) if values else 0.0


def label_of(parsed: Any, field: str | None) -> Any:
    if field is None or not isinstance(parsed, dict):
        return None
    return parsed.get(field)


CURVE_POINTS = 100
"""Points a curve keeps in a verdict: enough for a plot; a full per-step curve would swamp verdict.json."""


def thin_curve(curve: list, points: int = CURVE_POINTS) -> list:
    """Every k-th point and always the last, so the plot keeps its shape and its end."""
    step = -(-len(curve) // points) or 1
    kept = curve[::step]
    return kept if not curve or kept[-1] == curve[-1] else kept + [curve[-1]]
