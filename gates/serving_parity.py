"""serving_parity: does the serving engine answer as the reference does, and is the adapter really loaded?

Run with a serving engine (``gatekeeper check --runtime openai ...``): the same
evaluation prompts go to the engine (the ``base`` and ``adapter`` sides) and to
the ``hf`` reference runtime (``reference_base``, ``reference_adapter``), greedy,
with the same token budget. Per side it reports the share of identical answers
and the share with the same task outcome (parses or not, valid for the contract
or not, the same label), with the first differing word of the worst examples.

Two failures this exists for, both reported against vLLM: LoRA answers that do
not match peft/transformers (vllm-project/vllm#10798), and a PEFT adapter that
loads and silently does nothing (vllm-project/vllm#48019). The second shows as
the served adapter answering like the served base where the reference adapter
does not: ``noop_gap`` is how much more often the served pair agrees than the
reference pair does.

Defaults, chosen to hold for a float32 CPU engine and a bfloat16 GPU engine alike:
greedy text may legitimately differ in a few answers between engines (kernels and
batching move a bfloat16 logit, and a near-tie then flips a token), so identical
answers are reported but not required unless ``min_identical`` is set; the task
outcome is far more stable, so at least 95% of items must keep it on each side.
"""

from __future__ import annotations

import re

from gatekeeper.bundle.goldens import parse_strict_json
from gatekeeper.gating.evidence import label_of, rate
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import Example, GateResult, Metric

PAIRS = {"base": "reference_base", "adapter": "reference_adapter"}
_WORDS = re.compile(r"\w+|[^\w\s]|\s+")


def first_difference(served: str, reference: str) -> str:
    """Where two answers part, by word or punctuation mark: '' when they are equal."""
    a, b = _WORDS.findall(served), _WORDS.findall(reference)
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"word {index}: served {x!r}, reference {y!r}"
    if len(a) != len(b):
        index = min(len(a), len(b))
        return f"word {index}: served {a[index] if index < len(a) else 'end'!r}, " \
               f"reference {b[index] if index < len(b) else 'end'!r}"
    return ""


@gate("serving_parity")
class ServingParity:
    """The serving engine's answers keep the reference runtime's task outcomes, and its adapter has an effect."""

    sides = ("base", "adapter", "reference_base", "reference_adapter")
    adapter_kinds = ("lora",)  # engines serve peft adapters; a full-weight delta is served as a model of its own

    def __init__(self, golden_set: str = "eval", max_items: int | None = None, min_same_outcome: float = 0.95,
                 min_identical: float | None = None, max_noop_gap: float = 0.5, max_examples: int = 5):
        for name, value in (("min_same_outcome", min_same_outcome), ("min_identical", min_identical),
                            ("max_noop_gap", max_noop_gap)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.golden_set, self.max_items = golden_set, max_items
        self.min_same_outcome, self.min_identical, self.max_noop_gap = min_same_outcome, min_identical, max_noop_gap
        self.max_examples = max_examples

    def _items(self, ctx):
        items = ctx.golden(self.golden_set)
        return items[: self.max_items] if self.max_items else items

    def requests(self, ctx):
        return [ctx.task_request(item) for item in self._items(ctx)]

    @staticmethod
    def _outcome(ctx, text: str) -> tuple:
        """What the task gates read from an answer: parses, keeps the contract, its label."""
        parsed = parse_strict_json(text)
        if parsed.error:
            return ("not JSON",)
        if ctx.contract.violation(parsed.value) is not None:
            return ("breaks contract",)
        return ("valid", label_of(parsed.value, ctx.contract.label_field))

    def evaluate(self, ctx, responses):
        items = self._items(ctx)
        answers = {side: [responses.get(side, ctx.task_request(i)) for i in items] for side in self.sides}
        metrics, evidence, failures = [], [], []
        for side, reference in PAIRS.items():
            served, expected = answers[side], answers[reference]
            identical = rate([a == b for a, b in zip(served, expected)])
            same = [self._outcome(ctx, a) == self._outcome(ctx, b) for a, b in zip(served, expected)]
            metrics += [
                Metric(name=f"{side}_same_outcome", adapter=rate(same), threshold=self.min_same_outcome),
                Metric(name=f"{side}_identical", adapter=identical, threshold=self.min_identical),
            ]
            if rate(same) < self.min_same_outcome:
                failures.append(f"{side}: {rate(same):.1%} of answers keep the reference's outcome")
            if self.min_identical is not None and identical < self.min_identical:
                failures.append(f"{side}: {identical:.1%} of answers identical to the reference")
            worst = [k for k, ok in enumerate(same) if not ok] + [k for k, ok in enumerate(same)
                                                                    if ok and served[k] != expected[k]]
            for k in worst[: self.max_examples]:
                evidence.append(Example(
                    id=f"{side}/{items[k].id}", input=items[k].input, expected=items[k].expected,
                    base_output=expected[k], adapter_output=served[k], base_ok=True, adapter_ok=same[k],
                    note=f"{side} side, reference in the base column; first difference at {first_difference(served[k], expected[k])}",
                ))
        served_alike = rate([a == b for a, b in zip(answers["adapter"], answers["base"])])
        reference_alike = rate([a == b for a, b in zip(answers["reference_adapter"], answers["reference_base"])])
        gap = round(served_alike - reference_alike, 6)
        metrics.append(Metric(name="noop_gap", adapter=gap, threshold=self.max_noop_gap, higher_is_better=False))
        if gap > self.max_noop_gap:
            failures.insert(0, f"the served adapter answers like the served base on {served_alike:.1%} of items, "
                               f"the reference adapter like its base on {reference_alike:.1%}: the adapter looks "
                               f"not loaded (a silent no-op)")
        rule = (f"on each side >= {self.min_same_outcome:.0%} of answers keep the reference's task outcome"
                + (f" and >= {self.min_identical:.0%} are identical" if self.min_identical is not None else "")
                + f"; served adapter-vs-base agreement at most {self.max_noop_gap:.0%} above the reference's")
        summary = "; ".join(failures) if failures else (
            f"outcomes kept on {metrics[0].adapter:.1%} (base) and {metrics[2].adapter:.1%} (adapter) of "
            f"{len(items)} items; identical {metrics[1].adapter:.1%} and {metrics[3].adapter:.1%}")
        return GateResult(
            name=self.name, status="failed" if failures else "passed", rule=rule, summary=summary,
            metrics=metrics, evidence=evidence,
            details={"golden_set": self.golden_set, "items": len(items), "runtime": ctx.runtime_name,
                     "served_adapter_like_base": served_alike, "reference_adapter_like_base": reference_alike},
        )
