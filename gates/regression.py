"""regression: did behaviour the base already had survive the fine-tune?

Two signals. Accuracy on a golden regression set (general instruction
following, facts, formatting, arithmetic, and the past tense of regular
verbs), compared item by item with an exact McNemar test: the items the
adapter breaks are weighed against the items it fixes. The set is not
filtered on the base's answers, which would select on its noise (see
golden_sets/regression/README.md). And
perplexity drift on control texts through the log-likelihood call: a model
that forgot how to write ordinary English shows it there first.
"""

from __future__ import annotations

import math

from gatekeeper.bundle.manifest import messages_for
from gatekeeper.gating.answer_checks import is_correct
from gatekeeper.gating.evidence import paired_result, rate, worst_examples
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import GateResult, Metric
from gatekeeper.runtime.requests import Generate, LogLik


@gate("regression")
class Regression:
    """Accuracy on the regression set must not drop significantly; control-text perplexity must not drift."""

    def __init__(
        self,
        golden_set: str = "regression",
        control_set: str = "control",
        max_drop: float = 0.02,
        alpha: float = 0.05,
        max_perplexity_drift: float = 0.05,
        max_new_tokens: int = 24,
        max_examples: int = 8,
    ):
        self.golden_set, self.control_set = golden_set, control_set
        self.max_drop, self.alpha, self.max_perplexity_drift = max_drop, alpha, max_perplexity_drift
        self.max_new_tokens, self.max_examples = max_new_tokens, max_examples

    def _ask(self, item) -> Generate:
        return Generate(messages_for(item.input), self.max_new_tokens)

    def requests(self, ctx):
        asks = [self._ask(i) for i in ctx.golden(self.golden_set)]
        return asks + [LogLik((), i.input) for i in ctx.golden(self.control_set)]

    def evaluate(self, ctx, responses):
        items = ctx.golden(self.golden_set)
        outputs = {s: [responses.get(s, self._ask(i)) for i in items] for s in ("base", "adapter")}
        correct = {s: [is_correct(o, i.expected) for o, i in zip(outputs[s], items)] for s in outputs}
        comparison, paired = paired_result([i.id for i in items], correct["base"], correct["adapter"], self.max_drop, self.alpha)
        significant_drop = comparison.delta < -self.max_drop and comparison.p_value < self.alpha

        control = ctx.golden(self.control_set)
        perplexity = {}
        for side in ("base", "adapter"):
            scored = [responses.get(side, LogLik((), i.input)) for i in control]
            perplexity[side] = math.exp(-sum(r.logprob for r in scored) / max(1, sum(r.tokens for r in scored)))
        drift = perplexity["adapter"] / perplexity["base"] - 1
        passed = not significant_drop and drift <= self.max_perplexity_drift

        families = sorted({i.expected.get("family", "") for i in items})
        per_family = {
            f: {s: rate([c for c, i in zip(correct[s], items) if i.expected.get("family", "") == f]) for s in correct}
            for f in families
        }
        notes = [f"expected {i.expected['answer']!r} ({i.expected['match']})" for i in items]
        return GateResult(
            name=self.name,
            status="passed" if passed else "failed",
            rule=(f"no significant accuracy drop larger than {self.max_drop * 100:.0f} points (alpha={self.alpha}); "
                  f"control perplexity drift <= {self.max_perplexity_drift:.0%}"),
            summary=(f"accuracy {comparison.base_rate:.1%} -> {comparison.adapter_rate:.1%} "
                     f"({comparison.delta * 100:+.1f} points, p={comparison.p_value:.2g}); "
                     f"perplexity {perplexity['base']:.2f} -> {perplexity['adapter']:.2f} ({drift:+.1%})"),
            metrics=[
                Metric(name="accuracy", base=rate(correct["base"]), adapter=rate(correct["adapter"]),
                       delta=round(comparison.delta, 6), threshold=-self.max_drop),
                Metric(name="control_perplexity", base=round(perplexity["base"], 4), adapter=round(perplexity["adapter"], 4),
                       delta=round(drift, 6), threshold=self.max_perplexity_drift, higher_is_better=False, unit="drift ratio"),
            ],
            paired=paired,
            evidence=worst_examples(items, outputs["base"], outputs["adapter"], correct["base"], correct["adapter"],
                                    notes, self.max_examples),
            details={"golden_set": self.golden_set, "control_set": self.control_set, "per_family_accuracy": per_family,
                     "control_texts": len(control)},
        )
