"""The Hugging Face runtime on a tiny model: batching, adapter toggling, log-likelihoods."""

import os

import pytest

from gatekeeper.bundle.base import resolve_base
from gatekeeper.bundle.manifest import messages_for
from gatekeeper.check import prepare
from gatekeeper.runtime.hf.runtime import HFRuntime
from gatekeeper.runtime.prompts import render
from gatekeeper.runtime.requests import Generate, LogLik

PROMPTS = [messages_for(f"ticket {k}: the {w} in area {k * 3}") for k, w in enumerate(["outage", "typo", "slow", "broken", "x" * 30, "short"])]


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return prepare(tiny_bundle).runtime


def test_batched_generation_matches_one_prompt_at_a_time(runtime):
    requests = [Generate(m, 10) for m in PROMPTS]
    batched = runtime.generate("adapter", requests)
    runtime.batch_size, saved = 1, runtime.batch_size
    try:
        single = [runtime.generate("adapter", [r])[0] for r in requests]
    finally:
        runtime.batch_size = saved
    assert batched == single


def test_mixed_token_budgets_keep_their_own_limits(runtime):
    requests = [Generate(PROMPTS[0], 2), Generate(PROMPTS[1], 10), Generate(PROMPTS[2], 2)]
    out = runtime.generate("adapter", requests)
    lengths = [len(runtime.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in out]
    assert lengths[0] <= 2 and lengths[2] <= 2
    assert out[1] == runtime.generate("adapter", [requests[1]])[0]


def test_base_side_is_the_base_model_without_loading_it_twice(runtime, tiny_base):
    """disable_adapter() on the shared model must equal a plain, separately loaded base."""
    import torch
    from transformers import AutoModelForCausalLM

    requests = [Generate(m, 10) for m in PROMPTS]
    via_toggle = runtime.generate("base", requests)
    plain = HFRuntime(resolve_base(str(tiny_base)), None, None, device="cpu")
    assert plain.generate("base", requests) == via_toggle
    # the adapter really is active on the adapter side
    ids = runtime.tokenizer(render(runtime.tokenizer, PROMPTS[0]), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with_adapter = runtime.model(ids).logits
        with runtime.model.disable_adapter():
            without = runtime.model(ids).logits
        reference = AutoModelForCausalLM.from_pretrained(tiny_base)(ids).logits
    assert torch.allclose(without, reference, atol=1e-5)
    assert not torch.allclose(with_adapter, reference, atol=1e-3)


def test_loglik_batched_equals_single_and_matches_greedy(runtime):
    greedy = runtime.generate("adapter", [Generate(PROMPTS[0], 6)])[0]
    requests = [LogLik(PROMPTS[0], greedy), LogLik(PROMPTS[1], " definitely not this"), LogLik((), "raw control text")]
    batched = runtime.loglik("adapter", requests)
    single = [runtime.loglik("adapter", [r])[0] for r in requests]
    for a, b in zip(batched, single):
        assert a.tokens == b.tokens and a.greedy == b.greedy
        assert abs(a.logprob - b.logprob) < 1e-4
    assert batched[0].greedy and batched[0].logprob < 0
    assert not batched[1].greedy


def test_token_counts_match_the_trainers_encoding_without_loading_weights(tiny_bundle):
    from gatekeeper.bundle.goldens import answer_text
    from gatekeeper.bundle.loading import load_bundle
    from gatekeeper.runtime.requests import CountTokens
    from gatekeeper.training.data import encode

    fresh = prepare(tiny_bundle).runtime
    bundle = load_bundle(tiny_bundle)
    prompt, items = bundle.manifest.task.prompt, bundle.golden["train"][:6]
    requests = [CountTokens(prompt.messages(i.input), answer_text(i.expected)) for i in items]
    counts = fresh.count_tokens("base", requests)
    assert counts == [len(e) for e in encode(items, fresh.tokenizer, prompt)]
    assert fresh.count_tokens("adapter", requests) == counts  # one tokenizer serves every side
    assert fresh._model is None  # the tokenizer alone answered


def test_the_dtype_that_really_runs_keys_the_cache(tiny_bundle, tiny_base):
    """``auto`` resolves before anything is cached: a bf16 answer is never served to a float32 check."""
    import torch

    from gatekeeper.runtime.hf.modeling import has_fast_bf16

    base = resolve_base(str(tiny_base))
    auto = HFRuntime(base, None, None, device="cpu", dtype="auto")
    assert auto.dtype_name == ("bfloat16" if has_fast_bf16(torch.device("cpu")) else "float32")
    identities = {d: HFRuntime(base, None, None, device="cpu", dtype=d).identity("base") for d in ("float32", "bfloat16")}
    assert identities["float32"]["dtype"] == "float32" and identities["bfloat16"]["dtype"] == "bfloat16"
    assert {k: v for k, v in identities["float32"].items() if k != "dtype"} == \
        {k: v for k, v in identities["bfloat16"].items() if k != "dtype"}


def test_a_bfloat16_runtime_serves_the_adapter_in_bfloat16(tiny_bundle):
    """As a bf16 server holds it: peft would otherwise upcast the adapter to float32 and run it apart."""
    import torch

    prepared = prepare(tiny_bundle)
    served = HFRuntime(prepared.base, prepared.bundle.adapter_dir, "x", device="cpu", dtype="bfloat16")
    assert {p.dtype for p in served.model.parameters()} == {torch.bfloat16}
    scored = {side: served.loglik(side, [LogLik(PROMPTS[0], " a fixed answer")])[0].logprob for side in ("base", "adapter")}
    assert scored["adapter"] != scored["base"]  # the adapter still acts in bf16


def test_rows_of_one_template_run_together_and_pad_little():
    from gatekeeper.runtime.hf.runtime import similar_rows_chunks, template_groups

    system = [1, 2, 3]
    ticket = system + list(range(10, 30))  # a 20-token task instruction after the system turn
    tickets = [ticket + [100 + i] * n for i, n in enumerate([5, 9, 6, 40, 7])]
    others = [system + [7, 7 + i] for i in range(3)]  # no template beyond the system turn
    contexts = [tickets[0], others[0], tickets[1], others[1], tickets[2], tickets[3], others[2], tickets[4]]
    groups = template_groups(contexts)
    assert len({groups[i] for i in (0, 2, 4, 5, 7)}) == 1 and groups[0] >= 0
    assert {groups[i] for i in (1, 3, 6)} == {-1}

    lengths = [len(c) for c in contexts]
    chunks = similar_rows_chunks(contexts, lengths, most=3)
    assert sorted(i for c in chunks for i in c) == list(range(len(contexts)))
    for chunk in chunks:
        assert len(chunk) <= 3 and len({groups[i] for i in chunk}) == 1
    # padding the 32-token ticket to the 63-token one would waste a third of the chunk
    assert [5] in chunks
    assert [0, 4, 7] in chunks and [2] in chunks


def test_cpu_kernels_limited_to_avx2_resolve_auto_to_float32():
    """What ATen dispatches to decides, not only the chip: with its kernels held to AVX2 an
    AVX512-BF16 machine has no native bfloat16 products, and ``auto`` must not pick them."""
    import subprocess
    import sys

    probe = ("import torch; from gatekeeper.runtime.hf.modeling import resolve_dtype; "
             "print(torch.backends.cpu.get_cpu_capability(), resolve_dtype('auto', torch.device('cpu')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}).stdout.split()
    assert out == ["AVX2", "float32"]
