"""Gate run against the way most tutorials evaluate an adapter, on the same prompts.

The tutorial way: load the base, generate one prompt at a time; load the base
again with the adapter, generate one prompt at a time. gatekeeper's way: one
model in memory, the base side inside ``disable_adapter()``, left-padded
batches. Both use greedy decoding with the same token budget, so their
outputs should agree; the script counts how many do.

Also times an unchanged re-check (all answers from the response cache)
against the cold check.

    python bench/gate_run.py [BUNDLE] [--limit N]

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
    from gatekeeper.candidates import existing_versions

    root = REPO / "adapters" / "support-ticket-json"
    versions = existing_versions(root)
    if not versions:
        sys.exit("no candidate yet: run `make demo` (or gatekeeper train) first, or pass a bundle")
    return root / f"v{versions[-1]}"


def tutorial_way(prepared, requests) -> tuple[dict[str, list[str]], float]:
    """Two separate model loads, one prompt at a time: what a notebook usually does."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from gatekeeper.hf_runtime import load_tokenizer, render

    started = time.perf_counter()
    tokenizer = load_tokenizer(prepared.base.path)
    outputs: dict[str, list[str]] = {}
    for side in ("base", "adapter"):
        model = AutoModelForCausalLM.from_pretrained(prepared.base.path, dtype=torch.float32)
        if side == "adapter":
            model = PeftModel.from_pretrained(model, prepared.bundle.adapter_dir)
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


def gatekeeper_way(bundle: Path, requests) -> tuple[dict[str, list[str]], float]:
    from gatekeeper.check import prepare

    started = time.perf_counter()
    runtime = prepare(bundle).runtime  # loads the base once when first asked
    outputs = {side: runtime.generate(side, requests) for side in ("adapter", "base")}
    return outputs, time.perf_counter() - started


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
    parser.add_argument("--limit", type=int, default=200, help="evaluation prompts to use (default 200)")
    args = parser.parse_args()
    bundle = args.bundle or newest_bundle()

    from gatekeeper.check import prepare
    from gatekeeper.engine import GateContext

    prepared = prepare(bundle)
    ctx = GateContext(prepared.bundle)
    requests = [ctx.task_request(item) for item in ctx.golden("eval")[: args.limit]]
    print(f"bundle {bundle}, {len(requests)} prompts, both sides, greedy, max_new_tokens={requests[0].max_new_tokens}")

    fast, fast_s = gatekeeper_way(bundle, requests)
    slow, slow_s = tutorial_way(prepared, requests)
    same = sum(fast[s][i] == slow[s][i] for s in fast for i in range(len(requests)))
    cold_s, warm_s = recheck_times(bundle)

    print(f"{'way':<34}{'seconds':>10}")
    print(f"{'tutorial (2 loads, 1 prompt/call)':<34}{slow_s:>10.1f}")
    print(f"{'gatekeeper (1 load, batched)':<34}{fast_s:>10.1f}")
    print(f"speed-up: {slow_s / fast_s:.1f}x; identical outputs: {same}/{2 * len(requests)}")
    print(f"check cold {cold_s:.1f} s, unchanged re-check {warm_s:.1f} s ({cold_s / warm_s:.0f}x)")


if __name__ == "__main__":
    main()
