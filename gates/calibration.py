"""calibration: after the fine-tune, do the model's confidences still mean what they say?

Where the contract has a closed set of labels, every label is scored on both
sides through the ``Choose`` request ``task_accuracy``'s ``loglik`` scoring
asks (the same request, so the two gates share one pass): each label written
as the answer begins. The softmax of those log-probabilities is the model's
distribution over the labels; its top label is the prediction and that
label's probability the confidence.

Reported for base and adapter: expected calibration error (ECE, equal-width
confidence bins), the multi-class Brier score, top-label accuracy and mean
confidence; a paired bootstrap interval of adapter − base ECE (the same
resampled items for both sides, seeded); a reliability diagram; and the
adapter's most confidently wrong items.

The rule: the adapter's ECE is not significantly worse than the base's, i.e.
the bootstrap interval's lower bound of adapter − base ECE is at most
``margin`` (0 by default: the gate fails only when the whole interval lies
above 0); or, where the bundle sets ``max_ece``, the adapter's ECE is at most
that bound, however the base fares.
"""

from __future__ import annotations

from gatekeeper.gating.evidence import label_of, rate
from gatekeeper.gating.labels import label_choice, label_distribution, ranked
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import Example, Figure, GateResult, Metric, Paired
from gatekeeper.gating.stats import (
    bootstrap,
    bootstrap_p_value,
    brier_score,
    confidence_bin,
    expected_calibration_error,
    percentile_interval,
    reliability,
)

SIDES = ("base", "adapter")


@gate("calibration")
class Calibration:
    """Expected calibration error of the label probabilities must not get significantly worse than the base's."""

    def __init__(
        self,
        golden_set: str = "eval",
        bins: int = 10,
        margin: float = 0.0,
        max_ece: float | None = None,
        resamples: int = 1000,
        ci_level: float = 0.95,
        seed: int = 0,
        max_examples: int = 8,
    ):
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        if resamples < 1:
            raise ValueError(f"resamples must be at least 1, got {resamples}")
        if not 0 < ci_level < 1:
            raise ValueError(f"ci_level must be between 0 and 1, got {ci_level}")
        self.golden_set, self.bins, self.margin, self.max_ece = golden_set, bins, margin, max_ece
        self.resamples, self.ci_level, self.seed, self.max_examples = resamples, ci_level, seed, max_examples

    @staticmethod
    def _not_applicable(ctx) -> str:
        labels = ctx.contract.labels
        if len(labels) >= 2:
            return ""
        if ctx.contract.label_field is None:
            return "the contract has no closed set of labels (no property with an enum, nor x-label-field)"
        return f"the contract's label field {ctx.contract.label_field!r} has {len(labels)} labels; calibration needs at least 2"

    def requests(self, ctx):
        items = ctx.golden(self.golden_set)  # a set the bundle lacks is refused before any model loads
        if self._not_applicable(ctx):
            return []
        return [label_choice(ctx, item) for item in items]

    def _rule(self) -> str:
        rule = (f"the {self.ci_level:.0%} paired bootstrap interval of adapter - base ECE ({self.bins} bins) has its "
                f"lower bound <= {self.margin:+.3f}: not significantly worse calibrated than the base")
        if self.max_ece is not None:
            rule += f"; or adapter ECE <= {self.max_ece:.3f}"
        return rule

    def evaluate(self, ctx, responses):
        reason = self._not_applicable(ctx)
        if reason:
            return GateResult(name=self.name, status="skipped", rule=self._rule(), summary=f"skipped: {reason}",
                              skip_reason=reason)
        items = ctx.golden(self.golden_set)
        labels = ctx.contract.labels
        field = ctx.contract.label_field
        gold = [label_of(i.expected, field) for i in items]
        gold_index = [labels.index(g) if g in labels else None for g in gold]
        probs, top, conf, correct, scored = {}, {}, {}, {}, {}
        for side in SIDES:
            scores = [responses.get(side, label_choice(ctx, item)) for item in items]
            probs[side] = [label_distribution(s) for s in scores]
            top[side] = [ranked(s, labels)[0][1] for s in scores]  # the contract's order breaks a tie
            conf[side] = [p[labels.index(t)] for p, t in zip(probs[side], top[side])]
            correct[side] = [t == g for t, g in zip(top[side], gold)]
            scored[side] = {
                "ece": expected_calibration_error(conf[side], correct[side], self.bins),
                "brier": brier_score(probs[side], gold_index),
                "accuracy": rate(correct[side]),
                "mean_confidence": sum(conf[side]) / len(items) if items else 0.0,
            }
        delta = scored["adapter"]["ece"] - scored["base"]["ece"]
        samples = self._bootstrap(conf, correct)
        low, high = percentile_interval(samples, self.ci_level)
        not_worse = low <= self.margin
        absolute = self.max_ece is not None and scored["adapter"]["ece"] <= self.max_ece
        passed = not_worse or absolute

        ids = [i.id for i in items]
        flipped_to_fail = [i for i, b, a in zip(ids, correct["base"], correct["adapter"]) if b and not a]
        flipped_to_pass = [i for i, b, a in zip(ids, correct["base"], correct["adapter"]) if a and not b]
        paired = Paired(
            n=len(items), test=f"paired bootstrap of adapter - base ECE ({self.resamples} resamples, seed {self.seed})",
            p_value=round(bootstrap_p_value(samples), 6), ci_level=self.ci_level,
            ci_low=round(low, 6), ci_high=round(high, 6),
            flipped_to_fail=flipped_to_fail, flipped_to_pass=flipped_to_pass,
            too_small=(f"{len(items)} items spread over {self.bins} bins: fewer than 5 per bin on average, "
                       "so ECE is noisy and the interval wide" if len(items) < 5 * self.bins else None),
        )
        because = ("not significantly worse than the base" if not_worse
                   else f"significantly worse than the base, but within max_ece {self.max_ece:.3f}" if absolute
                   else "significantly worse than the base")
        metrics = [
            Metric(name="ece", base=round(scored["base"]["ece"], 6), adapter=round(scored["adapter"]["ece"], 6),
                   delta=round(delta, 6), threshold=self.margin, higher_is_better=False),
            Metric(name="brier", base=round(scored["base"]["brier"], 6), adapter=round(scored["adapter"]["brier"], 6),
                   delta=round(scored["adapter"]["brier"] - scored["base"]["brier"], 6), higher_is_better=False),
            Metric(name="accuracy", base=scored["base"]["accuracy"], adapter=scored["adapter"]["accuracy"],
                   delta=round(scored["adapter"]["accuracy"] - scored["base"]["accuracy"], 6)),
            Metric(name="mean_confidence", base=round(scored["base"]["mean_confidence"], 6),
                   adapter=round(scored["adapter"]["mean_confidence"], 6),
                   delta=round(scored["adapter"]["mean_confidence"] - scored["base"]["mean_confidence"], 6)),
        ]
        if self.max_ece is not None:
            metrics.append(Metric(name="adapter_ece_bound", adapter=round(scored["adapter"]["ece"], 6),
                                  threshold=self.max_ece, higher_is_better=False))
        bins = {side: [_bin(b) for b in reliability(conf[side], correct[side], self.bins)] for side in SIDES}
        return GateResult(
            name=self.name,
            status="passed" if passed else "failed",
            rule=self._rule(),
            summary=(f"ECE {scored['base']['ece']:.3f} -> {scored['adapter']['ece']:.3f} ({delta:+.3f}, "
                     f"{self.ci_level:.0%} interval [{low:+.3f}, {high:+.3f}]): {because}; "
                     f"Brier {scored['base']['brier']:.3f} -> {scored['adapter']['brier']:.3f}, "
                     f"accuracy {scored['base']['accuracy']:.1%} -> {scored['adapter']['accuracy']:.1%}, "
                     f"mean confidence {scored['base']['mean_confidence']:.3f} -> {scored['adapter']['mean_confidence']:.3f}"),
            metrics=metrics,
            paired=paired,
            evidence=self._confidently_wrong(items, labels, gold, probs, top, conf, correct),
            details={
                "golden_set": self.golden_set,
                "label_field": field,
                "labels": labels,
                "bins": self.bins,
                "margin": self.margin,
                "max_ece": self.max_ece,
                "ece_delta_interval": [round(low, 6), round(high, 6)],
                "passed_by": "not significantly worse" if not_worse else "max_ece" if absolute else None,
                # overconfidence: how far mean confidence exceeds accuracy (negative: underconfident)
                "overconfidence": {side: round(scored[side]["mean_confidence"] - scored[side]["accuracy"], 6)
                                   for side in SIDES},
            },
            figures=[Figure(kind="reliability", data=bins,
                            caption=(f"Reliability: accuracy against mean confidence in {self.bins} equal-width bins "
                                     "(base grey, adapter blue); points below the diagonal are overconfident."))],
            outcomes={i.id: ok for i, ok in zip(items, correct["adapter"])},
        )

    def _bootstrap(self, conf: dict, correct: dict) -> list[float]:
        """Sorted samples of adapter - base ECE, both sides computed on the same resampled items."""
        n = len(conf["base"])
        cells = {side: [confidence_bin(c, self.bins) for c in conf[side]] for side in SIDES}

        def ece(side: str, rows: list[int]) -> float:
            # per bin: |sum correct - sum confidence| / n is (count / n) * |accuracy - mean confidence|
            hits, mass = [0.0] * self.bins, [0.0] * self.bins
            for i in rows:
                hits[cells[side][i]] += correct[side][i]
                mass[cells[side][i]] += conf[side][i]
            return sum(abs(h - m) for h, m in zip(hits, mass)) / len(rows)

        return bootstrap(n, lambda rows: ece("adapter", rows) - ece("base", rows), self.resamples, self.seed)

    def _confidently_wrong(self, items, labels, gold, probs, top, conf, correct) -> list[Example]:
        """The adapter's wrong top labels, most confident first: where its confidence misleads most."""
        wrong = sorted((i for i in range(len(items)) if not correct["adapter"][i]),
                       key=lambda i: (-conf["adapter"][i], i))[: self.max_examples]

        def shown(side: str, i: int) -> str:
            order = sorted(zip(probs[side][i], labels), key=lambda pair: -pair[0])
            return ", ".join(f"{label} {p:.3f}" for p, label in order) + " (probability of each label)"

        return [
            Example(id=items[i].id, input=items[i].input, expected=items[i].expected,
                    base_output=shown("base", i), adapter_output=shown("adapter", i),
                    base_ok=correct["base"][i], adapter_ok=False,
                    note=(f"adapter {conf['adapter'][i]:.3f} sure of {top['adapter'][i]!r}, expected {gold[i]!r}; "
                          f"base {conf['base'][i]:.3f} sure of {top['base'][i]!r}"))
            for i in wrong
        ]


def _bin(b) -> dict:
    return {"low": round(b.low, 6), "high": round(b.high, 6), "count": b.count,
            "confidence": round(b.confidence, 6), "accuracy": round(b.accuracy, 6)}
