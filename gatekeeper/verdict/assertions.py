"""Assertions on a verdict whose failure message is the evidence: rule, values, worst examples.

Used by the pytest plugin for its one-test-per-gate items, and by users in
their own tests::

    from gatekeeper.verdict.assertions import assert_gate

    def test_accuracy_improves_enough(gatekeeper_verdict):
        assert_gate(gatekeeper_verdict, "task_accuracy", min_delta=0.10)

Nothing here imports more than the standard library, so the pytest plugin
stays cheap to load.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatekeeper.gating.result import GateResult, Metric
    from gatekeeper.verdict.model import Verdict

EXAMPLES_SHOWN = 3


class GateAssertionError(AssertionError):
    """A gate, or a bound on one of its metrics, did not hold; the message explains with evidence."""


def _num(value: float | None, sign: str = "") -> str:
    return "—" if value is None else f"{value:{sign}.3f}"


def _clip(value, width: int = 80) -> str:
    """Text quoted (so whitespace and line breaks show), anything else as JSON, cut to ``width``."""
    shown = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def explain(result: GateResult, report: str | None = None) -> list[str]:
    """The lines that justify a gate's status: its rule, every metric, the paired test, the worst examples."""
    lines = [f"rule: {result.rule}" if result.rule else "rule: —"]
    if result.summary:
        lines.append(result.summary)
    if result.error:
        lines.append(f"error: {result.error}")
    for m in result.metrics:
        threshold = f" (threshold {_num(m.threshold)})" if m.threshold is not None else ""
        lines.append(f"{m.name}: base {_num(m.base)}, adapter {_num(m.adapter)}, delta {_num(m.delta, '+')}{threshold}")
    if result.paired:
        p = result.paired
        lines.append(
            f"paired on {p.n} items: p={p.p_value:.3g}, {p.ci_level:.0%} interval [{p.ci_low:+.3f}, {p.ci_high:+.3f}], "
            f"{len(p.flipped_to_fail)} pass→fail, {len(p.flipped_to_pass)} fail→pass"
        )
    if result.evidence:
        lines.append("worst examples:")
        for e in result.evidence[:EXAMPLES_SHOWN]:
            lines.append(f"  {e.id}: {_clip(e.input, 50)} expected {_clip(e.expected, 60)}")
            lines.append(f"    adapter: {_clip(e.adapter_output or '')}" + (f"  ({e.note})" if e.note else ""))
        if len(result.evidence) > EXAMPLES_SHOWN:
            lines.append(f"  … {len(result.evidence) - EXAMPLES_SHOWN} more in the report")
    if report:
        lines.append(f"report: {report}")
    return lines


def gate_message(result: GateResult, headline: str, report: str | None = None) -> str:
    return "\n".join([headline] + ["  " + line for line in explain(result, report)])


def _bound_problems(metric: Metric, bounds: dict[str, float | None]) -> list[str]:
    checks = {
        "min_delta": (metric.delta, lambda value, bound: value >= bound, "below"),
        "max_delta": (metric.delta, lambda value, bound: value <= bound, "above"),
        "min_adapter": (metric.adapter, lambda value, bound: value >= bound, "below"),
        "max_adapter": (metric.adapter, lambda value, bound: value <= bound, "above"),
    }
    problems = []
    for name, bound in bounds.items():
        if bound is None:
            continue
        value, holds, side = checks[name]
        what = "delta" if "delta" in name else "adapter value"
        if value is None:
            problems.append(f"{metric.name} has no {what} to compare with {name}={bound}")
        elif not holds(value, bound):
            problems.append(f"{metric.name} {what} {_num(value, '+' if 'delta' in name else '')} is {side} {name}={bound}")
    return problems


def assert_gate(
    verdict: Verdict,
    gate: str,
    *,
    metric: str | None = None,
    min_delta: float | None = None,
    max_delta: float | None = None,
    min_adapter: float | None = None,
    max_adapter: float | None = None,
) -> GateResult:
    """Assert that ``gate`` passed, or, given bounds, that its metric keeps them; returns the gate's result.

    With no bound the gate's own rule decides (status ``passed``). With bounds,
    your rule decides: ``metric`` (default: the gate's headline metric) must
    keep every bound given, whatever the gate's status.
    """
    try:
        result = verdict.gate(gate)
    except KeyError as exc:
        raise GateAssertionError(exc.args[0]) from None
    __tracebackhide__ = True  # pytest shows the caller's line, not this helper's
    bounds = {"min_delta": min_delta, "max_delta": max_delta, "min_adapter": min_adapter, "max_adapter": max_adapter}
    if all(bound is None for bound in bounds.values()):
        if result.status != "passed":
            raise GateAssertionError(gate_message(result, f"gate {gate!r} {result.status}"))
        return result
    if not result.metrics:
        raise GateAssertionError(gate_message(result, f"gate {gate!r} reports no metric to bound"))
    try:
        measured = result.metric(metric) if metric else result.metrics[0]
    except KeyError as exc:
        raise GateAssertionError(exc.args[0]) from None
    problems = _bound_problems(measured, bounds)
    if problems:
        raise GateAssertionError(gate_message(result, f"gate {gate!r}: " + "; ".join(problems)))
    return result
