"""json_parse: does every answer parse as JSON and keep the contract's schema?"""

from __future__ import annotations

from gatekeeper.bundle.goldens import parse_strict_json
from gatekeeper.gating.evidence import paired_result, rate, worst_examples
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import GateResult, Metric


@gate("json_parse")
class JsonParse:
    """Share of outputs that parse as strict JSON and validate against the contract."""

    def __init__(self, min_rate: float = 0.95, golden_set: str = "eval", max_examples: int = 5):
        if not 0.0 <= min_rate <= 1.0:
            raise ValueError(f"min_rate must be within [0, 1], got {min_rate}")
        self.min_rate, self.golden_set, self.max_examples = min_rate, golden_set, max_examples

    def requests(self, ctx):
        return [ctx.task_request(item) for item in ctx.golden(self.golden_set)]

    def _judge(self, ctx, text: str) -> tuple[bool, bool, str]:
        parsed = parse_strict_json(text)
        if parsed.error:
            return False, False, parsed.error
        problem = ctx.contract.violation(parsed.value)
        return True, problem is None, f"breaks contract: {problem}" if problem else ""

    def evaluate(self, ctx, responses):
        items = ctx.golden(self.golden_set)
        outputs = {side: [responses.get(side, ctx.task_request(i)) for i in items] for side in ("base", "adapter")}
        judged = {side: [self._judge(ctx, text) for text in outputs[side]] for side in outputs}
        parses = {side: [j[0] for j in judged[side]] for side in judged}
        valid = {side: [j[1] for j in judged[side]] for side in judged}
        # The rule is absolute; the paired test says whether the change from the
        # base is real, at the size of the failure share the rule allows.
        margin = max(1 - self.min_rate, 0.05)
        _, paired = paired_result([i.id for i in items], valid["base"], valid["adapter"], margin)
        adapter_rate = rate(valid["adapter"])
        passed = adapter_rate >= self.min_rate
        return GateResult(
            name=self.name,
            status="passed" if passed else "failed",
            rule=f"adapter parse+valid rate >= {self.min_rate:.2f}",
            summary=f"{adapter_rate:.1%} of adapter outputs are valid JSON for the contract (base {rate(valid['base']):.1%})",
            metrics=[
                Metric(name="valid_rate", base=rate(valid["base"]), adapter=adapter_rate,
                       delta=round(adapter_rate - rate(valid["base"]), 6), threshold=self.min_rate),
                Metric(name="parse_rate", base=rate(parses["base"]), adapter=rate(parses["adapter"]),
                       delta=round(rate(parses["adapter"]) - rate(parses["base"]), 6)),
            ],
            paired=paired,
            evidence=worst_examples(
                items, outputs["base"], outputs["adapter"], valid["base"], valid["adapter"],
                [j[2] for j in judged["adapter"]], self.max_examples,
            ),
            details={"golden_set": self.golden_set},
            outcomes={item.id: ok for item, ok in zip(items, valid["adapter"])},
        )
