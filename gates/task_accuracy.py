"""task_accuracy: did the target task improve, and by enough to matter?

Two ways to read a side's label. ``generate`` (the default) parses the greedy
answer, the same text json_parse judges. ``loglik`` scores the contract's
closed set of labels instead: each label written as the answers begin
(``{"priority": "high",``), the most likely one is the prediction. It needs no
generation, so it is the fast way where accuracy alone is asked; it measures
which label the model prefers, not whether it would write it out.

``min_label_accuracy`` also asks that the adapter get each label right on at
least that share of its items: an adapter can raise the average by answering
two labels for everything and never the other two, which no user of the
labels would accept.
"""

from __future__ import annotations

from collections import Counter

from gatekeeper.gating.evidence import label_of, paired_result, rate, worst_examples
from gatekeeper.gating.labels import check_scoring, label_choice, label_field, label_request, read_labels
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import GateResult, Metric
from gatekeeper.runtime.requests import Choose


@gate("task_accuracy")
class TaskAccuracy:
    """Label accuracy of base and adapter on the same items, and the improvement in points."""

    def __init__(
        self,
        min_delta: float = 0.10,
        alpha: float = 0.05,
        require_significant: bool = True,
        golden_set: str = "eval",
        max_examples: int = 8,
        scoring: str = "generate",
        min_label_accuracy: float | None = None,
    ):
        check_scoring(scoring)
        if min_label_accuracy is not None and not 0 <= min_label_accuracy <= 1:
            raise ValueError(f"min_label_accuracy must be between 0 and 1, got {min_label_accuracy}")
        self.min_delta, self.alpha, self.require_significant = min_delta, alpha, require_significant
        self.golden_set, self.max_examples, self.scoring = golden_set, max_examples, scoring
        self.min_label_accuracy = min_label_accuracy

    def choice(self, ctx, item) -> Choose:
        """The labels as the start of an answer, written as training writes answers (key order kept)."""
        return label_choice(ctx, item)

    def requests(self, ctx):
        return [label_request(ctx, item, self.scoring) for item in ctx.golden(self.golden_set)]

    def evaluate(self, ctx, responses):
        field = label_field(ctx)
        items = ctx.golden(self.golden_set)
        gold = [label_of(i.expected, field) for i in items]
        outputs, predicted, correct = {}, {}, {}
        for side in ("base", "adapter"):
            outputs[side], predicted[side] = read_labels(ctx, responses, side, items, self.scoring)
            correct[side] = [p == g for p, g in zip(predicted[side], gold)]
        comparison, paired = paired_result([i.id for i in items], correct["base"], correct["adapter"], self.min_delta, self.alpha)
        significant = comparison.p_value < self.alpha and comparison.delta > 0
        per_label = _per_label(gold, correct)
        starved = sorted(label for label, row in per_label.items()
                         if self.min_label_accuracy is not None and row["adapter"] < self.min_label_accuracy)
        passed = comparison.delta >= self.min_delta and (significant or not self.require_significant) and not starved
        rule = f"adapter - base accuracy >= {self.min_delta * 100:+.0f} points"
        if self.require_significant:
            rule += f", significant at alpha={self.alpha}"
        if self.min_label_accuracy is not None:
            rule += f"; every label >= {self.min_label_accuracy:.0%} right"
        summary = (f"accuracy {comparison.base_rate:.1%} -> {comparison.adapter_rate:.1%} "
                   f"({comparison.delta * 100:+.1f} points, p={comparison.p_value:.2g})")
        if starved:
            summary += "; below the per-label floor: " + ", ".join(
                f"{label} {per_label[label]['adapter']:.1%}" for label in starved)
        notes = [f"expected {g!r}, got {p!r}" for g, p in zip(gold, predicted["adapter"])]
        return GateResult(
            name=self.name,
            status="passed" if passed else "failed",
            rule=rule,
            summary=summary,
            metrics=[
                Metric(name="accuracy", base=rate(correct["base"]), adapter=rate(correct["adapter"]),
                       delta=round(comparison.delta, 6), threshold=self.min_delta),
            ],
            paired=paired,
            evidence=worst_examples(
                items, outputs["base"], outputs["adapter"], correct["base"], correct["adapter"], notes, self.max_examples
            ),
            details={
                "golden_set": self.golden_set,
                "label_field": field,
                "scoring": self.scoring,
                "per_label_accuracy": per_label,
                "adapter_predictions": dict(sorted(Counter(str(p) for p in predicted["adapter"]).items())),
            },
            outcomes={item.id: ok for item, ok in zip(items, correct["adapter"])},
        )


def _per_label(gold: list, correct: dict[str, list[bool]]) -> dict[str, dict[str, float]]:
    table = {}
    for label in sorted({str(g) for g in gold}):
        rows = [i for i, g in enumerate(gold) if str(g) == label]
        table[label] = {side: rate([correct[side][i] for i in rows]) for side in ("base", "adapter")} | {"n": len(rows)}
    return table
