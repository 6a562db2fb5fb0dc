"""Fused LoRA layers against peft's own forward on a trained tiny adapter."""

import pytest

from gatekeeper.bundle.manifest import messages_for
from gatekeeper.check import prepare
from gatekeeper.runtime.hf.fused import FusedLora
from gatekeeper.runtime.prompts import render


@pytest.fixture(scope="module")
def model_and_ids(tiny_bundle):
    runtime = prepare(tiny_bundle).runtime
    tokenizer = runtime.tokenizer
    texts = [render(tokenizer, messages_for(t)) for t in ("the outage in area 3", "a typo")]
    return runtime.model, tokenizer(texts, return_tensors="pt", padding=True)


def test_fused_layers_give_peft_logits_up_to_rounding(model_and_ids):
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear

    model, batch = model_and_ids
    fused = FusedLora(model)
    assert len(fused.layers) == sum(isinstance(m, LoraLinear) for m in model.modules()) > 0
    with torch.inference_mode():
        plain = model(**batch).logits
        with model.disable_adapter():
            plain_base = model(**batch).logits
        with fused:
            assert all("forward" in vars(module) for module, _ in fused.layers)
            quick = model(**batch).logits
            with model.disable_adapter():
                quick_base = model(**batch).logits
            again = fused.plain(lambda: model(**batch).logits)
    assert not any("forward" in vars(module) for module, _ in fused.layers)
    torch.testing.assert_close(quick, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(quick_base, plain_base)  # the base side runs peft's own path
    assert torch.equal(again, plain)


def test_layers_fused_are_only_plain_lora_in_inference(model_and_ids):
    model, _ = model_and_ids
    model.train()
    try:
        assert FusedLora(model).layers == []  # dropout would be live
    finally:
        model.eval()
