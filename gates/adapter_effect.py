"""adapter_effect: does the adapter change anything at all?

A mis-targeted adapter (modules that match no layer), a scaling of zero, or
weights that never loaded all serve the base model under the adapter's name,
and every other gate then compares the base with itself. This gate asks for
evidence of an effect: greedy outputs that differ, or a shift in the
log-probability the model assigns to the expected answers.
"""

from __future__ import annotations

from gatekeeper.bundle.goldens import answer_text
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import Example, GateResult, Metric
from gatekeeper.runtime.requests import LogLik


@gate("adapter_effect")
class AdapterEffect:
    """The adapter's outputs or answer log-probabilities differ measurably from the base's."""

    def __init__(self, golden_set: str = "eval", min_changed_share: float = 0.02, min_logprob_shift: float = 0.01,
                 scored_items: int = 64):
        if scored_items < 1:
            raise ValueError(f"scored_items must be >= 1, got {scored_items}")
        self.golden_set = golden_set
        self.min_changed_share, self.min_logprob_shift = min_changed_share, min_logprob_shift
        # The log-probability shift is a second witness beside changed outputs; a mean over
        # the first 64 items shows an effect as surely as over all of them, and on a CPU
        # scoring every item of the demo's 234 cost a quarter of a minute per side.
        self.scored_items = scored_items

    def _score(self, ctx, item) -> LogLik:
        return LogLik(ctx.prompt.messages(item.input), answer_text(item.expected))

    def requests(self, ctx):
        items = ctx.golden(self.golden_set)
        return [ctx.task_request(i) for i in items] + [self._score(ctx, i) for i in items[: self.scored_items]]

    def evaluate(self, ctx, responses):
        items = ctx.golden(self.golden_set)
        outputs = {s: [responses.get(s, ctx.task_request(i)) for i in items] for s in ("base", "adapter")}
        changed = [b != a for b, a in zip(outputs["base"], outputs["adapter"])]
        shifts = []
        for item in items[: self.scored_items]:
            base, adapter = (responses.get(s, self._score(ctx, item)) for s in ("base", "adapter"))
            shifts.append(abs(adapter.logprob - base.logprob) / max(1, base.tokens))
        changed_share = sum(changed) / len(items)
        mean_shift = sum(shifts) / len(shifts)
        passed = changed_share >= self.min_changed_share or mean_shift >= self.min_logprob_shift
        unchanged = [i for i, c in zip(range(len(items)), changed) if not c][:3]
        return GateResult(
            name=self.name,
            status="passed" if passed else "failed",
            rule=(f"changed outputs >= {self.min_changed_share:.0%} or mean |log-prob shift| per answer token "
                  f">= {self.min_logprob_shift} nats"),
            summary=(f"{changed_share:.1%} of outputs changed; mean |log-prob shift| {mean_shift:.4f} nats/token"
                     + ("" if passed else " — the adapter behaves like the base")),
            metrics=[
                Metric(name="changed_output_share", adapter=round(changed_share, 6), threshold=self.min_changed_share),
                Metric(name="mean_logprob_shift", adapter=round(mean_shift, 6), threshold=self.min_logprob_shift,
                       unit="nats/token"),
            ],
            evidence=[] if passed else [
                Example(id=items[i].id, input=items[i].input, expected=items[i].expected,
                        base_output=outputs["base"][i], adapter_output=outputs["adapter"][i], note="identical output")
                for i in unchanged
            ],
            details={"golden_set": self.golden_set, "items": len(items), "scored_items": len(shifts)},
        )
