"""merge_equivalence: does the merged model behave like base + adapter?

A merged model is what many deployments ship, and it is built by a different
code path than the one every other gate judged. Merging reorders the same
arithmetic, so in full precision the merged model must agree with the
unmerged adapter to rounding: identical greedy outputs, next-token logits
within about 1e-4 (the tolerance peft's own merge tests use in float32).
Half precision and 4-bit bases round more, hence looser defaults per serving
format, each overridable in the bundle.

Behaviour alone cannot catch a scaling saved wrong: the merge and the
unmerged adapter both read ``adapter_config.json``, so they agree with each
other and both differ from what was trained. The LoRA scaling saved there is
therefore checked against the recipe the adapter was trained with.

For a QLoRA candidate (``serving.quantization: nf4``) the merge goes into the
de-quantised base and its drift from the 4-bit unmerged model is judged;
re-quantising that merge to 4-bit is reported too, as whether it changes
greedy outputs.

``merged_model`` judges a merged model exported elsewhere instead of merging
here (an export into the wrong base fails); ``save_merged`` writes the merge
with its hashes into the report directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import Example, GateResult, Metric
from gatekeeper.runtime.requests import Divergence, ExportMerged


@dataclass(frozen=True)
class Tolerance:
    logit: float | None  # max |Δlogit| / (1 + |logit|), i.e. torch.allclose(atol=rtol=logit); None: not judged
    prob: float  # max |probability difference|
    kl: float  # max KL(unmerged || merged), nats
    top1: float  # min share of positions with the same most likely token


# Keyed by serving format. Logits are judged as peft's merge tests judge them,
# allclose with atol = rtol = 1e-4 in float32 (SmolLM2-135M with a rank-16
# LoRA: max |Δlogit| 6e-5 on logits near 20, so 3e-6 on this scale); half
# precision keeps 2 to 3 significant digits; a 4-bit base is judged on
# probabilities (1e-2, as peft's 4-bit merge tests do), since its logits move
# with every de-quantisation detail.
TOLERANCES = {
    "float32": Tolerance(logit=1e-4, prob=1e-5, kl=1e-6, top1=1.0),
    "float16": Tolerance(logit=1e-2, prob=5e-3, kl=1e-3, top1=0.99),
    "bfloat16": Tolerance(logit=5e-2, prob=2e-2, kl=1e-2, top1=0.99),
    "nf4": Tolerance(logit=None, prob=1e-2, kl=1e-2, top1=0.99),
}
SHOWN = 5  # evidence rows
EXPORT_DIR = "merged-model"  # inside the report directory, with save_merged


def lora_scaling(alpha: float, r: int, rslora: bool) -> float:
    return alpha / (math.sqrt(r) if rslora else r)


def scaling_problems(ctx) -> tuple[list[str], str]:
    """What in adapter_config.json scales the update differently from training; and what was compared."""
    recipe = ctx.recipe
    config_path = ctx.bundle.adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        return [], f"not checked: a {config.get('peft_type')} adapter has no LoRA scaling"
    if recipe is None:
        return [], "not checked: the bundle carries no training recipe"
    trained = recipe.adapter
    expected = lora_scaling(trained.alpha, trained.r, trained.use_rslora)
    saved = lora_scaling(config.get("lora_alpha", 8), config.get("r", 8), bool(config.get("use_rslora")))
    problems = []
    if not math.isclose(saved, expected, rel_tol=1e-9):
        problems.append(
            f"{config_path.name}: lora_alpha {config.get('lora_alpha', 8):g}, r {config.get('r', 8)}"
            f"{', rsLoRA' if config.get('use_rslora') else ''} scale the update by {saved:g}; the recipe it was "
            f"trained with (alpha {trained.alpha:g}, r {trained.r}{', rsLoRA' if trained.use_rslora else ''}) "
            f"gives {expected:g}"
        )
    for pattern in ("alpha_pattern", "rank_pattern"):
        if config.get(pattern):
            problems.append(f"{config_path.name}: {pattern} {config[pattern]} rescales layers the recipe trained uniformly")
    return problems, f"adapter_config.json scaling {saved:g}, recipe {expected:g}"


@gate("merge_equivalence")
class MergeEquivalence:
    """The merged model's greedy outputs and next-token distributions match the unmerged adapter's."""

    sides = ("merged",)
    adapter_kinds = ("lora",)  # a delta or full-weight candidate has no separate adapter to merge

    def __init__(
        self,
        golden_set: str = "eval",
        max_prompts: int | None = 32,
        max_logit_diff: float | None = None,
        max_prob_diff: float | None = None,
        max_kl: float | None = None,
        min_top1_agreement: float | None = None,
        require_identical_greedy: bool = True,
        requantized_must_match: bool = False,
        check_scaling: bool = True,
        merged_model: str | None = None,
        save_merged: bool = False,
    ):
        if max_prompts is not None and max_prompts < 1:
            raise ValueError(f"max_prompts must be at least 1, got {max_prompts}")
        if merged_model and Path(merged_model).expanduser().is_absolute() and not Path(merged_model).expanduser().is_dir():
            raise ValueError(f"merged_model {merged_model!r} is not a directory")
        self.golden_set, self.max_prompts = golden_set, max_prompts
        self.overrides = {"logit": max_logit_diff, "prob": max_prob_diff, "kl": max_kl, "top1": min_top1_agreement}
        self.require_identical_greedy, self.requantized_must_match = require_identical_greedy, requantized_must_match
        self.check_scaling, self.merged_model, self.save_merged = check_scaling, merged_model, save_merged

    # -- requests -------------------------------------------------------------
    def _items(self, ctx):
        items = ctx.golden(self.golden_set)
        return items[: self.max_prompts] if self.max_prompts else items

    def _merged_dir(self, ctx) -> tuple[str, str]:
        if not self.merged_model:
            return "", ""
        from gatekeeper.bundle.base import directory_weights_sha256

        path = Path(self.merged_model).expanduser()
        path = path if path.is_absolute() else ctx.bundle.root / path
        return str(path.resolve()), directory_weights_sha256(path)

    def _quantized(self, ctx) -> bool:
        return ctx.bundle.manifest.serving.quantization == "nf4" and not self.merged_model

    def _request(self, ctx, item, variant: str = "merged") -> Divergence:
        merged_from, merged_sha256 = self._merged_dir(ctx)
        return Divergence(ctx.prompt.messages(item.input), ctx.bundle.manifest.decoding.max_new_tokens,
                          variant=variant, merged_from=merged_from, merged_sha256=merged_sha256)

    def _export(self, ctx) -> ExportMerged | None:
        if not self.save_merged or self.merged_model or ctx.report_dir is None:
            return None
        return ExportMerged(str((ctx.report_dir / EXPORT_DIR).resolve()))

    def requests(self, ctx):
        variants = ("merged", "requantized") if self._quantized(ctx) else ("merged",)
        export = self._export(ctx)
        return [self._request(ctx, item, v) for v in variants for item in self._items(ctx)] + ([export] if export else [])

    # -- evaluation -------------------------------------------------------------
    def _tolerance(self, ctx) -> tuple[Tolerance, str]:
        serving = ctx.bundle.manifest.serving
        key = "nf4" if serving.quantization == "nf4" else ctx.dtype
        defaults = TOLERANCES[key]
        chosen = Tolerance(**{k: defaults.__dict__[k] if v is None else v for k, v in self.overrides.items()})
        overridden = sorted(k for k, v in self.overrides.items() if v is not None)
        return chosen, key + (f" defaults, {', '.join(overridden)} from the bundle" if overridden else " defaults")

    def evaluate(self, ctx, responses):
        items = self._items(ctx)
        tol, source = self._tolerance(ctx)
        got = [responses.get("merged", self._request(ctx, item)) for item in items]
        identical = [r.output == r.reference_output for r in got]
        positions = sum(r.positions for r in got)
        worst = {
            "logit": max(r.max_rel_logit_diff for r in got),
            "abs_logit": max(r.max_abs_logit_diff for r in got),
            "prob": max(r.max_prob_diff for r in got),
            "kl": max(r.max_kl for r in got),
            "top1": sum(r.top1_agreement * r.positions for r in got) / max(1, positions),
        }
        failures = []
        if self.require_identical_greedy and not all(identical):
            failures.append(f"{identical.count(False)} of {len(items)} greedy outputs differ")
        for key, label in (("logit", "max |Δlogit|/(1+|logit|)"), ("prob", "max |Δp|"), ("kl", "max KL")):
            limit = getattr(tol, key)
            if limit is not None and worst[key] > limit:
                failures.append(f"{label} {worst[key]:.3g} > {limit:g}")
        if worst["top1"] < tol.top1:
            failures.append(f"top-1 agreement {worst['top1']:.4f} < {tol.top1:g}")

        problems, scaling_note = scaling_problems(ctx) if self.check_scaling else ([], "not checked (check_scaling: false)")
        failures += problems

        metrics = [
            Metric(name="greedy_identical_share", adapter=round(sum(identical) / len(items), 6),
                   threshold=1.0 if self.require_identical_greedy else None),
            Metric(name="max_rel_logit_diff", adapter=worst["logit"], threshold=tol.logit, higher_is_better=False),
            Metric(name="max_abs_logit_diff", adapter=worst["abs_logit"], higher_is_better=False),
            Metric(name="max_prob_diff", adapter=worst["prob"], threshold=tol.prob, higher_is_better=False),
            Metric(name="max_kl", adapter=worst["kl"], threshold=tol.kl, higher_is_better=False, unit="nats"),
            Metric(name="top1_agreement", adapter=round(worst["top1"], 6), threshold=tol.top1),
            Metric(name="scaling_mismatches", adapter=len(problems), threshold=0, higher_is_better=False),
        ]
        details = {
            "golden_set": self.golden_set, "prompts": len(items), "positions_compared": positions,
            "tolerance": {**tol.__dict__, "source": source}, "scaling": scaling_note, "scaling_problems": problems,
            "merged": self.merged_model or ("de-quantised 4-bit base + adapter, merged" if self._quantized(ctx)
                                            else "copy of the base + adapter, merged (merge_and_unload)"),
            "compared_on": "the prompt's last position and each position of the unmerged adapter's greedy output",
        }
        if self.save_merged:
            export = self._export(ctx)
            details["saved"] = (
                {"path": export.directory, "sha256": responses.get("merged", export)} if export
                else "not written: " + ("the gate judged an external merged model" if self.merged_model
                                        else "this run has no report directory")
            )
        if self._quantized(ctx):
            requant = [responses.get("merged", self._request(ctx, item, "requantized")) for item in items]
            same = [r.output == r.reference_output for r in requant]
            metrics += [
                Metric(name="requantized_greedy_identical_share", adapter=round(sum(same) / len(items), 6),
                       threshold=1.0 if self.requantized_must_match else None),
                Metric(name="requantized_max_prob_diff", adapter=max(r.max_prob_diff for r in requant),
                       higher_is_better=False),
                Metric(name="requantized_max_kl", adapter=max(r.max_kl for r in requant), higher_is_better=False,
                       unit="nats"),
            ]
            details["requantized"] = (f"re-quantising the merge to nf4 changes {same.count(False)} of {len(items)} "
                                      f"greedy outputs (judged: {'yes' if self.requantized_must_match else 'no'})")
            if self.requantized_must_match and not all(same):
                failures.append(f"re-quantised merge changes {same.count(False)} of {len(items)} greedy outputs")

        rule = (f"merged vs unmerged adapter on {len(items)} prompts: "
                + ("greedy outputs identical; " if self.require_identical_greedy else "")
                + (f"|Δlogit| <= {tol.logit:g}·(1 + |logit|); " if tol.logit is not None else "")
                + f"max |Δp| <= {tol.prob:g}; max KL <= {tol.kl:g} nats; top-1 agreement >= {tol.top1:g} ({source})"
                + ("; LoRA scaling as trained" if self.check_scaling else ""))
        summary = ("merged model matches the unmerged adapter" if not failures else "; ".join(failures))
        summary += f" (max |Δlogit| {worst['abs_logit']:.3g}, max KL {worst['kl']:.3g})"
        if "requantized" in details:
            summary += f"; {details['requantized'].split(' (')[0]}"
        return GateResult(
            name=self.name, status="failed" if failures else "passed", rule=rule, summary=summary,
            metrics=metrics, evidence=self._evidence(items, got, tol), details=details,
        )

    def _evidence(self, items, got, tol: Tolerance) -> list[Example]:
        """Items whose greedy output differs, then those past a drift tolerance: the worst first."""
        def off(r) -> bool:
            return (r.output != r.reference_output or r.max_prob_diff > tol.prob or r.max_kl > tol.kl
                    or (tol.logit is not None and r.max_rel_logit_diff > tol.logit))

        order = sorted((i for i in range(len(items)) if off(got[i])),
                       key=lambda i: (got[i].output == got[i].reference_output, -got[i].max_kl))
        return [
            Example(
                id=items[i].id, input=items[i].input, expected=items[i].expected,
                base_output=got[i].output, adapter_output=got[i].reference_output,
                base_ok=got[i].output == got[i].reference_output, adapter_ok=True,
                note=(f"left: merged, right: unmerged adapter; "
                      f"{'same' if got[i].output == got[i].reference_output else 'different'} greedy output; "
                      f"max |Δlogit| {got[i].max_abs_logit_diff:.3g}, max KL {got[i].max_kl:.3g}, "
                      f"top-1 agreement {got[i].top1_agreement:.3f} over {got[i].positions} positions"),
            )
            for i in order[:SHOWN]
        ]
