"""template_drift: is the prompt rendered and stopped exactly as during training?

A chat template or stop token that differs between training and serving
silently changes every prompt the adapter sees; the adapter then looks
broken (or fine) for reasons that have nothing to do with its weights.
"""

from __future__ import annotations

import difflib
import json

from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import GateResult, Metric

COMPARED = ("chat_template", "special_tokens", "eos_token", "pad_token", "stop_token_ids", "stop_tokens", "tokenizer_sha256")


@gate("template_drift")
class TemplateDrift:
    """Chat template, special tokens and stop tokens served equal the ones the adapter was trained with."""

    sides = ()

    def __init__(self, check_pad_token: bool = True):
        self.compared = [k for k in COMPARED if check_pad_token or k != "pad_token"]

    def requests(self, ctx):
        return []

    def evaluate(self, ctx, responses):
        rule = "chat template, special tokens, stop tokens and tokenizer identical to training"
        ref = ctx.bundle.manifest.serving_profile
        if ref is None:
            return GateResult(name=self.name, status="failed", rule=rule,
                              summary="cannot compare: the bundle records no training-time serving profile")
        if ctx.serving is None:  # a server does not say which template it applies: serving_parity tests it
            reason = f"the {ctx.runtime_name} runtime does not report the chat template it serves"
            return GateResult(name=self.name, status="skipped", rule=rule, summary=f"skipped: {reason}",
                              skip_reason=reason)
        trained = json.loads(ctx.bundle.path(ref).read_text(encoding="utf-8"))
        served = ctx.serving
        differences = {key: {"trained": trained.get(key), "served": served.get(key)}
                       for key in self.compared if trained.get(key) != served.get(key)}
        details = {"compared": self.compared, "differences": differences}
        if "chat_template" in differences:
            details["chat_template_diff"] = "".join(difflib.unified_diff(
                trained.get("chat_template", "").splitlines(keepends=True),
                served.get("chat_template", "").splitlines(keepends=True),
                "trained", "served",
            ))
        summary = "identical" if not differences else "differs: " + ", ".join(sorted(differences))
        return GateResult(
            name=self.name,
            status="failed" if differences else "passed",
            rule=rule,
            summary=summary,
            metrics=[Metric(name="differences", adapter=len(differences), threshold=0, higher_is_better=False)],
            details=details,
        )
