"""The CUDA paths on the tiny model: every training method, the runtime, and the release gates.

Skipped without a CUDA GPU (CI has none); on a GPU machine they run with the rest:
``python -m pytest tests/test_gpu.py``.
"""

import json

import pytest
import torch

from gatekeeper.bundle.loading import load_bundle
from gatekeeper.bundle.manifest import messages_for
from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.check import prepare
from gatekeeper.cli import main
from gatekeeper.runtime.prompts import load_tokenizer, render
from gatekeeper.runtime.requests import Generate, LogLik
from gatekeeper.training.loop import train
from gatekeeper.training.versions import write_candidate
from tests.conftest import edit_manifest, write_recipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPTS = [messages_for(f"ticket {k}: the {w} in area {k * 3}") for k, w in enumerate(["outage", "typo", "slow", "broken", "x" * 30, "short"])]


def _train_on_cuda(tmp_path, tiny_base, tiny_task, method="lora", **training):
    settings = {"max_steps": 6, "eval_every": 3, "precision": "auto", **training}
    extra = {"adapter": None, "galore": {"rank": 4, "update_proj_gap": 2, "scale": 1.0}} if method == "galore" else {}
    recipe, root = load_recipe(write_recipe(tmp_path / method, tiny_base, tiny_task, method=method,
                                            training=settings, serving={"device": "cuda"}, **extra))
    result = train(recipe, root)
    return result, write_candidate(result, recipe, root)


@pytest.mark.parametrize("method", ["lora", "qlora", "dora", "galore"])
def test_each_method_trains_on_cuda_in_bfloat16(method, tmp_path, tiny_base, tiny_task):
    result, bundle = _train_on_cuda(tmp_path, tiny_base, tiny_task, method)
    record = result.record
    assert record["device"] == "cuda" and record["precision"] == "bfloat16"  # every GPU here is Ampere or later
    assert record["peak_gpu_mib"] > 0
    assert record["best_val_loss"] < record["val_curve"][0][1]
    assert all(p.device.type == "cuda" for p in result.model.parameters())
    if method == "qlora":
        import bitsandbytes as bnb

        layers = [m for m in result.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and all(m.weight.device.type == "cuda" for m in layers)
    assert load_bundle(bundle).manifest.adapter.method == method


def test_runtime_greedy_on_cuda_equals_stock_generate_one_prompt_at_a_time(tmp_path, tiny_base, tiny_task):
    _, bundle = _train_on_cuda(tmp_path, tiny_base, tiny_task)  # serves in float32, the bundle's default
    runtime = prepare(bundle).runtime
    requests = [Generate(m, 12) for m in PROMPTS]
    fast = {side: runtime.generate(side, requests) for side in ("base", "adapter")}
    assert runtime.dtype_name == "float32"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(tiny_base)
    for side in ("base", "adapter"):
        model = AutoModelForCausalLM.from_pretrained(tiny_base).to("cuda")
        if side == "adapter":
            model = PeftModel.from_pretrained(model, bundle / "adapter")
        model.eval()
        for request, got in zip(requests, fast[side]):
            ids = tokenizer(render(tokenizer, request.messages), return_tensors="pt", add_special_tokens=False).to("cuda")
            out = model.generate(**ids, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            assert got == tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_loglik_on_cuda_matches_the_cpu(tmp_path, tiny_base, tiny_task):
    _, bundle = _train_on_cuda(tmp_path, tiny_base, tiny_task)
    requests = [LogLik(m, " high") for m in PROMPTS]
    on_gpu = prepare(bundle).runtime.loglik("adapter", requests)
    edit_manifest(bundle, lambda data: data["serving"].update(device="cpu"))
    on_cpu = prepare(bundle).runtime.loglik("adapter", requests)
    for g, c in zip(on_gpu, on_cpu):
        assert g.logprob == pytest.approx(c.logprob, abs=1e-3)


def test_release_gates_run_on_cuda(tmp_path, tiny_base, tiny_task):
    """merge_equivalence holds on the GPU, and latency_memory reads the CUDA allocator's peak."""
    _, bundle = _train_on_cuda(tmp_path, tiny_base, tiny_task)
    edit_manifest(bundle, lambda data: data.update(gates=[
        {"name": "merge_equivalence", "params": {"max_prompts": 6}},
        {"name": "latency_memory", "params": {"prompts": 2, "repeats": 2, "warmup": 1}},
    ]))
    assert main(["check", str(bundle), "--out", str(tmp_path / "report"), "-q"]) == 0
    merge, latency = json.loads((tmp_path / "report" / "verdict.json").read_text())["gates"]
    assert merge["status"] == "passed"
    for side in latency["details"]["figures"].values():
        assert side["device"].startswith("cuda") and side["memory"] == "cuda allocated" and side["peak_mib"] > 0
