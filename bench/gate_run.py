"""Gate run against the way most tutorials evaluate an adapter, on the same prompts.

Three ways to get the greedy answers of base and adapter to the same prompts:

- tutorial: load the base, generate one prompt at a time; load the base again
  with the adapter, generate one prompt at a time;
- stock batched: one model with the adapter unmerged, ``generate`` on
  left-padded batches, the base side inside ``disable_adapter()``;
- gatekeeper: its runtime (shared prompt prefix, finished rows leave the batch).

All decode greedily with the same token budget in the dtype the bundle is
served in (``auto``: bfloat16 on a CPU or GPU that runs it natively), the
adapter held in that dtype too, so their outputs should agree; the script
counts how many are identical to the tutorial's.

Also times an unchanged re-check (all answers from the response cache)
against the cold check.

    python bench/gate_run.py [BUNDLE] [--limit N] [--no-recheck] [--no-tutorial]

``--no-tutorial`` leaves out the slow way (on a GPU, 200 prompts one at a
time take minutes) and counts identical outputs against stock batched
``generate`` instead.

BUNDLE defaults to the newest adapters/support-ticket-json/vN.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def newest_bundle() -> Path:
    from gatekeeper.training.versions import existing_versions

    root = REPO / "adapters" / "support-ticket-json"
    versions = existing_versions(root)
    if not versions:
        sys.exit("no candidate yet: run `make demo` (or gatekeeper train) first, or pass a bundle")
    return root / f"v{versions[-1]}"


def tutorial_way(prepared, requests, dtype: str) -> tuple[dict[str, list[str]], float]:
    """Two separate model loads, one prompt at a time: what a notebook usually does."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from gatekeeper.runtime.prompts import load_tokenizer, render

    started = time.perf_counter()
    tokenizer = load_tokenizer(prepared.base.path)
    outputs: dict[str, list[str]] = {}
    for side in ("base", "adapter"):
        model = AutoModelForCausalLM.from_pretrained(prepared.base.path, dtype=getattr(torch, dtype))
        if side == "adapter":
            model = PeftModel.from_pretrained(model, prepared.bundle.adapter_dir, autocast_adapter_dtype=False)
        model.eval()
        outputs[side] = []
        for request in requests:
            ids = tokenizer(render(tokenizer, request.messages), return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**ids, do_sample=False, max_new_tokens=request.max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            outputs[side].append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        del model
    return outputs, time.perf_counter() - started


def stock_batched_way(prepared, requests, dtype: str, batch_size: int = 16) -> tuple[dict[str, list[str]], float]:
    """One load, the adapter unmerged, ``generate`` on left-padded batches."""
    import contextlib

    import torch

    from gatekeeper.runtime.hf.modeling import load_adapter, load_base_model
    from gatekeeper.runtime.prompts import load_tokenizer, render

    started = time.perf_counter()
    tokenizer = load_tokenizer(prepared.base.path)
    tokenizer.padding_side = "left"
    model = load_adapter(load_base_model(prepared.base.path, dtype=dtype), prepared.bundle.adapter_dir).eval()
    texts = [render(tokenizer, r.messages) for r in requests]
    outputs: dict[str, list[str]] = {}
    for side in ("adapter", "base"):
        outputs[side] = []
        with torch.inference_mode(), (model.disable_adapter() if side == "base" else contextlib.nullcontext()):
            for k in range(0, len(texts), batch_size):
                batch = tokenizer(texts[k : k + batch_size], return_tensors="pt", padding=True,
                                  add_special_tokens=False).to(model.device)
                out = model.generate(**batch, do_sample=False, max_new_tokens=requests[0].max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                width = batch["input_ids"].shape[1]
                outputs[side] += [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]
    return outputs, time.perf_counter() - started


def warm_imports(prepared) -> None:
    """Import what every way needs before timing any: the way timed first would otherwise pay
    Python's imports of peft and the model's transformers code for the others (1.6 s measured)."""
    import peft  # noqa: F401
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(prepared.base.path))]


def gatekeeper_way(bundle: Path, requests) -> tuple[dict[str, list[str]], float]:
    from gatekeeper.check import prepare

    started = time.perf_counter()
    runtime = prepare(bundle).runtime  # loads the base once when first asked
    outputs = {side: runtime.generate(side, requests) for side in ("adapter", "base")}
    return outputs, time.perf_counter() - started


def label_scoring_way(bundle: Path, items) -> tuple[dict[str, list[str]], float]:
    """task_accuracy's ``scoring: loglik``: the contract's labels scored, nothing generated."""
    from gatekeeper.check import prepare
    from gatekeeper.gating.engine import GateContext
    from gatekeeper.gating.registry import get_gate

    started = time.perf_counter()
    prepared = prepare(bundle)
    ctx, gate = GateContext(prepared.bundle), get_gate("task_accuracy").build({"scoring": "loglik"})
    requests = [gate.choice(ctx, item) for item in items]
    labels = ctx.contract.labels
    picked = {side: [labels[row.index(max(row))] for row in prepared.runtime.choose(side, requests)]
              for side in ("adapter", "base")}
    return picked, time.perf_counter() - started


def written_labels(outputs: list[str], field: str) -> list:
    """The label each greedy answer writes, as task_accuracy reads it: None where there is none."""
    from gatekeeper.bundle.goldens import parse_strict_json
    from gatekeeper.gating.evidence import label_of

    return [label_of(parse_strict_json(t).value, field) for t in outputs]


def parting_margin(prepared, side: str, request, one: str, other: str) -> str:
    """The logits of the two tokens where two greedy answers part, the prompt run alone.

    Where batching alone changed a greedy token, the two were all but tied:
    their gap is of the order of the rounding a different matrix shape brings.
    """
    import torch

    from gatekeeper.runtime.prompts import render

    runtime = prepared.runtime
    tokenizer = runtime.tokenizer
    prompt = tokenizer(render(tokenizer, request.messages), add_special_tokens=False)["input_ids"]
    a, b = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (one, other))
    k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), None)
    if k is None:
        return "one answer is the other's prefix"
    with torch.inference_mode(), runtime._sides(side):
        logits = runtime.model(torch.tensor([prompt + a[:k]], device=runtime.model.device)).logits[0, -1].float()
    return (f"they part at answer token {k}: {tokenizer.decode(a[k])!r} {float(logits[a[k]]):.5f} against "
            f"{tokenizer.decode(b[k])!r} {float(logits[b[k]]):.5f} (gap {abs(float(logits[a[k]] - logits[b[k]])):.1e})")


def recheck_times(bundle: Path) -> tuple[float, float]:
    from gatekeeper.check import prepare, run_check

    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        times = []
        for _ in range(2):
            started = time.perf_counter()
            run_check(prepare(bundle), Path(out), cache_path=Path(cache) / "responses.sqlite")
            times.append(time.perf_counter() - started)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path)
    parser.add_argument("--limit", type=int, default=100, help="evaluation prompts to use (default 100)")
    parser.add_argument("--no-recheck", action="store_true", help="skip timing a whole cold check and its re-check")
    parser.add_argument("--stock-batch", type=int, default=16, help="batch size of stock generate (default 16)")
    parser.add_argument("--no-tutorial", action="store_true", help="skip the one-prompt-at-a-time way")
    args = parser.parse_args()
    bundle = args.bundle or newest_bundle()

    from gatekeeper.check import prepare
    from gatekeeper.errors import GatekeeperError
    from gatekeeper.gating.engine import GateContext

    try:
        prepared = prepare(bundle)
    except GatekeeperError as exc:
        sys.exit(f"gate_run: {exc}")
    ctx = GateContext(prepared.bundle)
    requests = [ctx.task_request(item) for item in ctx.golden("eval")[: args.limit]]
    dtype = prepared.runtime.dtype_name
    print(f"bundle {bundle}, {len(requests)} prompts, both sides, greedy, max_new_tokens={requests[0].max_new_tokens}, "
          f"{dtype}")

    warm_imports(prepared)
    fast, fast_s = gatekeeper_way(bundle, requests)
    scored, scored_s = label_scoring_way(bundle, ctx.golden("eval")[: args.limit])
    batched, batched_s = stock_batched_way(prepared, requests, dtype, args.stock_batch)
    slow, slow_s = (None, None) if args.no_tutorial else tutorial_way(prepared, requests, dtype)
    cold_s, warm_s = (None, None) if args.no_recheck else recheck_times(bundle)
    reference, reference_name = (batched, "stock batched") if slow is None else (slow, "tutorial")

    def same(outputs) -> str:
        n = sum(outputs[s][i] == reference[s][i] for s in reference for i in range(len(requests)))
        return f"{n}/{2 * len(requests)}"

    print(f"{'way':<36}{'seconds':>9}{'vs tutorial':>13}{'  identical to ' + reference_name}")
    if slow is not None:
        print(f"{'tutorial (2 loads, 1 prompt/call)':<36}{slow_s:>9.1f}{'1.0x':>13}{same(slow):>15}")
    for name, outputs, seconds in (("stock generate, batched, unmerged", batched, batched_s),
                                   ("gatekeeper runtime", fast, fast_s)):
        ratio = f"{slow_s / seconds:.1f}x" if slow is not None else "-"
        print(f"{name:<36}{seconds:>9.1f}{ratio:>13}{same(outputs):>15}")
    print(f"gatekeeper vs stock batched generate: {batched_s / fast_s:.1f}x")
    field = ctx.contract.label_field
    agree = [(w == p) for side in scored for w, p in zip(written_labels(fast[side], field), scored[side])
             if w is not None]
    ratio = f"{slow_s / scored_s:.1f}x" if slow is not None else "-"
    print(f"{'labels scored (scoring: loglik)':<36}{scored_s:>9.1f}{ratio:>13}   "
          f"top label = written label on {sum(agree)}/{len(agree)} answers that are JSON; "
          f"{fast_s / scored_s:.1f}x faster than generating them")
    for side in ("base", "adapter"):
        for i in range(len(requests)):
            if fast[side][i] != reference[side][i]:
                print(f"first difference ({side}, prompt {i}):\n  {reference_name}: {reference[side][i]!r}\n"
                      f"  gatekeeper: {fast[side][i]!r}\n  {parting_margin(prepared, side, requests[i], reference[side][i], fast[side][i])}")
                break
    if cold_s is not None:
        print(f"check cold {cold_s:.1f} s, unchanged re-check {warm_s:.1f} s ({cold_s / warm_s:.0f}x)")


if __name__ == "__main__":
    main()
