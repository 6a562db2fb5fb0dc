"""The minimal trainer on the tiny model: versions, selection, answer-only loss, bad recipes."""

import json
from pathlib import Path

import pytest

from gatekeeper.bundle.loading import load_bundle
from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.errors import GoldenSetError, RecipeError, RuntimeLoadError
from gatekeeper.training.data import Encoded, collate
from gatekeeper.training.loop import lr_at, train
from gatekeeper.training.versions import existing_versions, write_candidate
from tests.conftest import OTHER_REQUESTS, PROMPT_USER, tiny_items, write_jsonl, write_recipe


def test_labels_cover_answer_tokens_only():
    batch = [Encoded("a", [5, 6, 7], [8, 9]), Encoded("b", [5], [8, 9, 10])]
    ids, mask, labels = collate(batch, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8, 9], [5, 8, 9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert labels.tolist() == [[-100, -100, -100, 8, 9], [-100, 8, 9, 10, -100]]


def test_schedule_warms_up_then_decays_to_the_floor():
    values = [lr_at(s, 1.0, 3, 20, 0.1) for s in range(20)]
    assert values[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a >= b for a, b in zip(values[2:], values[3:]))
    assert lr_at(20, 1.0, 3, 20, 0.1) == pytest.approx(0.1)


def test_training_lowers_validation_loss_and_selects_the_minimum(tiny_bundle):
    record = json.loads((tiny_bundle / "training.json").read_text())
    curve = record["val_curve"]
    assert curve[0][0] == 0 and len(curve) == 3  # step 0, then every 3 of 6 steps
    assert record["best_val_loss"] == min(v for _, v in curve)
    assert record["best_val_loss"] < curve[0][1]
    assert record["best_step"] in [s for s, _ in curve]
    assert record["corpus_sha256"].keys() == {"contract.schema.json", "eval.jsonl", "train.jsonl", "validation.jsonl"}
    assert record["adapter_bytes"] == (tiny_bundle / "adapter" / "adapter_model.safetensors").stat().st_size
    assert record["base_bytes"] > record["adapter_bytes"] > 0


def test_each_run_is_a_new_version_and_earlier_ones_are_untouched(tmp_path, tiny_base, tiny_task):
    recipe, root = load_recipe(write_recipe(tmp_path / "c", tiny_base, tiny_task, training={"max_steps": 1, "eval_every": 1}))
    result = train(recipe, root)
    first = write_candidate(result, recipe, root)
    before = {p.name: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    second = write_candidate(result, recipe, root)
    assert (first.name, second.name) == ("v1", "v2")
    assert existing_versions(root) == [1, 2]
    assert {p.name: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    assert load_bundle(second).manifest.version == 2
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging left behind


def _fails(tmp_path, tiny_base, tiny_task, match, **overrides):
    path = write_recipe(tmp_path / "r", tiny_base, tiny_task, **overrides)
    with pytest.raises((RecipeError, GoldenSetError), match=match):
        recipe, root = load_recipe(path)
        train(recipe, root)
    assert not list((tmp_path / "r").glob("v*"))


def test_unknown_recipe_key_is_named(tmp_path, tiny_base, tiny_task):
    _fails(tmp_path, tiny_base, tiny_task, r"unknown key 'training.learning_rte'",
           training={"learning_rte": 0.1})


def test_unknown_method_is_refused(tmp_path, tiny_base, tiny_task):
    _fails(tmp_path, tiny_base, tiny_task, r"field 'method'", method="sgd-magic")


def test_missing_base_is_refused(tmp_path, tiny_base, tiny_task):
    with pytest.raises(RuntimeLoadError, match="neither a built-in alias"):
        recipe, root = load_recipe(write_recipe(tmp_path / "r", tiny_base, tiny_task, base=str(tmp_path / "nowhere")))
        train(recipe, root)


def test_target_modules_that_match_nothing_list_the_real_names(tmp_path, tiny_base, tiny_task):
    _fails(tmp_path, tiny_base, tiny_task, r"match no layer.*q_proj",
           adapter={"r": 4, "alpha": 8, "target_modules": ["attn.c_attn"]})


def test_answers_that_would_be_cut_refuse_training(tmp_path, tiny_base, tiny_task):
    _fails(tmp_path, tiny_base, tiny_task, r"48 example\(s\) exceed max_seq_len=20",
           training={"max_steps": 1, "max_seq_len": 20})


def test_training_data_that_breaks_the_contract_names_file_and_line(tmp_path, tiny_base, tiny_task):
    items = tiny_items("train", 6)
    items[3]["expected"]["priority"] = "urgent"
    bad = write_jsonl(tmp_path / "bad.jsonl", items)
    recipe = write_recipe(tmp_path / "r", tiny_base, tiny_task)
    text = recipe.read_text().replace(str(tiny_task / "train.jsonl"), str(bad))
    recipe.write_text(text)
    with pytest.raises(GoldenSetError, match=r"bad.jsonl:4: expected answer breaks the contract"):
        train(*load_recipe(recipe))


def test_duplicate_training_inputs_are_refused(tmp_path, tiny_base, tiny_task):
    items = tiny_items("train", 6)
    items[5]["input"] = items[1]["input"].upper()
    bad = write_jsonl(tmp_path / "dup.jsonl", items)
    recipe = write_recipe(tmp_path / "r", tiny_base, tiny_task)
    recipe.write_text(recipe.read_text().replace(str(tiny_task / "train.jsonl"), str(bad)))
    with pytest.raises(RecipeError, match=r"dup.jsonl:6: duplicate input \(same as line 2\)"):
        train(*load_recipe(recipe))


def test_same_recipe_and_seed_give_a_byte_identical_adapter(tmp_path, tiny_base, tiny_task):
    """Re-running a recipe reproduces its adapter exactly (CPU), so a record can be audited by re-running it."""
    digests = []
    for run in ("a", "b"):
        overrides = {"training": {"max_steps": 3, "eval_every": 3, "seed": 7}, "adapter": {"r": 4, "alpha": 8, "dropout": 0.1}}
        recipe, root = load_recipe(write_recipe(tmp_path / run, tiny_base, tiny_task, **overrides))
        bundle = write_candidate(train(recipe, root), recipe, root)
        digests.append((bundle / "adapter" / "adapter_model.safetensors").read_bytes())
    assert digests[0] == digests[1]
    recipe, root = load_recipe(write_recipe(tmp_path / "c", tiny_base, tiny_task, training={"max_steps": 3, "eval_every": 3, "seed": 8},
                                            adapter={"r": 4, "alpha": 8, "dropout": 0.1}))
    other = write_candidate(train(recipe, root), recipe, root)
    assert (other / "adapter" / "adapter_model.safetensors").read_bytes() != digests[0]


@pytest.mark.parametrize("method", ["qlora", "dora"])
def test_each_method_trains_and_checks_end_to_end(method, tmp_path, tiny_base, tiny_task):
    from gatekeeper.cli import main

    recipe, root = load_recipe(write_recipe(tmp_path / method, tiny_base, tiny_task, method=method))
    result = train(recipe, root)
    bundle = write_candidate(result, recipe, root)
    manifest = load_bundle(bundle).manifest
    assert manifest.adapter.method == method
    config = json.loads((bundle / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is (method == "dora")
    if method == "qlora":
        import bitsandbytes as bnb

        assert manifest.serving.quantization == "nf4"
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in result.model.modules())
    assert result.record["best_val_loss"] < result.record["val_curve"][0][1]
    assert main(["check", str(bundle), "--out", str(tmp_path / "r"), "-q"]) == 0


def test_bfloat16_training_holds_the_base_in_bfloat16_and_trains_float32_weights(tmp_path, tiny_base, tiny_task):
    """Mixed precision: products in bf16, the frozen base stored in bf16, the adapter's weights float32 throughout."""
    import torch
    from safetensors import safe_open

    recipe, root = load_recipe(write_recipe(tmp_path / "bf16", tiny_base, tiny_task,
                                            training={"max_steps": 6, "eval_every": 3, "precision": "bfloat16"}))
    result = train(recipe, root)
    assert result.record["precision"] == "bfloat16"
    weights = dict(result.model.named_parameters())
    assert {p.dtype for n, p in weights.items() if "lora_" in n} == {torch.float32}
    assert {p.dtype for n, p in weights.items() if "lora_" not in n} == {torch.bfloat16}
    assert result.record["best_val_loss"] < result.record["val_curve"][0][1]
    bundle = write_candidate(result, recipe, root)
    with safe_open(str(bundle / "adapter" / "adapter_model.safetensors"), "pt") as saved:
        dtypes = {saved.get_slice(k).get_dtype() for k in saved.keys()}  # noqa: SIM118 (a safetensors handle)
    assert dtypes == {"F32"}


def test_qlora_gradients_still_reach_the_first_layer_after_validation(tiny_base):
    """Eval mode must not leave the 4-bit layers in bitsandbytes' inference-only layout."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from gatekeeper.runtime.hf.modeling import (
        keep_4bit_layers_differentiable,
        load_base_model,
        target_logprobs,
    )

    model = load_base_model(tiny_base, quantization="nf4", device="cpu")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    keep_4bit_layers_differentiable(model)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    labels = torch.full_like(ids, -100)
    labels[0, 4:] = ids[0, 4:]
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # a validation pass
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # torch warns when backprop meets a kernel without backward
        (-target_logprobs(model, ids, torch.ones_like(ids), labels)[0].mean()).backward()
    first = next(p for n, p in model.named_parameters() if "layers.0." in n and "lora_B" in n)
    assert first.grad is not None and first.grad.abs().sum() > 0


def _rehearsal_recipe(tmp_path, tiny_base, tiny_task, rehearsal: bool) -> Path:
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"id": f"r{k}", "input": t, "expected": None}
                                                 for k, t in enumerate(OTHER_REQUESTS[:16])])
    data = {"train": str(tiny_task / "train.jsonl"), "validation": str(tiny_task / "validation.jsonl"),
            "eval": str(tiny_task / "eval.jsonl"), "contract": str(tiny_task / "contract.schema.json"),
            "prompt": {"user": PROMPT_USER}}
    if rehearsal:
        data["rehearsal"] = {"prompts": str(pool), "per_batch": 4, "max_new_tokens": 6}
    return write_recipe(tmp_path / ("with" if rehearsal else "without"), tiny_base, tiny_task, data=data,
                        training={"batch_size": 8, "max_steps": 12, "eval_every": 12, "learning_rate": 0.03,
                                  "warmup_steps": 1})


def test_rehearsal_keeps_the_bases_answers_to_other_requests(tmp_path, tiny_base, tiny_task):
    """Trained with the base's own answers mixed in, the adapter stays closer to the base away from the task."""
    import torch

    from gatekeeper.bundle.manifest import messages_for
    from gatekeeper.runtime.prompts import encode_example

    results = {}
    for rehearsal in (False, True):
        recipe, root = load_recipe(_rehearsal_recipe(tmp_path, tiny_base, tiny_task, rehearsal))
        results[rehearsal] = train(recipe, root)
    record = results[True].record["rehearsal"]
    assert record["examples"] == 16 and len(record["ids"]) == 16

    held_out = OTHER_REQUESTS[16:]  # never rehearsed
    model, tokenizer = results[True].model, results[True].tokenizer
    with model.disable_adapter():  # the base's answers to requests nobody trained on
        from gatekeeper.runtime.hf.decoding import greedy
        from gatekeeper.runtime.prompts import render

        prompts = [tokenizer(render(tokenizer, messages_for(t)), add_special_tokens=False)["input_ids"] for t in held_out]
        answers = [tokenizer.decode(a) for a in greedy(model, prompts, 6, {tokenizer.eos_token_id}, tokenizer.pad_token_id)]

    def nll_of_base_answers(result) -> float:
        total = 0.0
        for text, answer in zip(held_out, answers):
            prompt, target = encode_example(result.tokenizer, messages_for(text), answer)
            ids = torch.tensor([prompt + target])
            labels = torch.full_like(ids, -100)
            labels[0, len(prompt):] = ids[0, len(prompt):]
            with torch.no_grad():
                total += float(result.model(input_ids=ids, labels=labels).loss)
        return total / len(held_out)

    assert nll_of_base_answers(results[True]) < nll_of_base_answers(results[False])


def test_rehearsal_pool_travels_with_the_bundle(tmp_path, tiny_base, tiny_task):
    recipe, root = load_recipe(_rehearsal_recipe(tmp_path, tiny_base, tiny_task, True))
    bundle = write_candidate(train(recipe, root), recipe, root)
    loaded = load_bundle(bundle)
    assert [i.input for i in loaded.golden["rehearsal"]] == OTHER_REQUESTS[:16]
    assert "rehearsal.jsonl" in json.loads((bundle / "training.json").read_text())["corpus_sha256"]


def test_shared_prefix_scoring_equals_the_plain_forward_with_gradients(tiny_base, tiny_task):
    """Running the common prompt prefix once must give the same log-probs and gradients as running every row."""
    import torch
    from peft import LoraConfig, get_peft_model

    import gatekeeper.runtime.hf.modeling as modeling
    from gatekeeper.bundle.goldens import load_jsonl
    from gatekeeper.bundle.manifest import PromptTemplate
    from gatekeeper.runtime.prompts import load_tokenizer
    from gatekeeper.training.data import encode

    tokenizer = load_tokenizer(tiny_base)
    rows = encode(load_jsonl(tiny_task / "train.jsonl")[:6], tokenizer, PromptTemplate(user=PROMPT_USER))
    ids, mask, labels = collate(rows, tokenizer.pad_token_id)
    assert modeling.shared_prefix(ids, labels) >= modeling.MIN_SHARED_PREFIX
    torch.manual_seed(0)
    model = get_peft_model(modeling.load_base_model(tiny_base, device="cpu"),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"))
    results = []
    for share in (True, False):
        model.zero_grad()
        original = modeling.shared_prefix
        if not share:
            modeling.shared_prefix = lambda ids, labels: 0
        try:
            chosen, _, owner = modeling.target_logprobs(model, ids, mask, labels)
        finally:
            modeling.shared_prefix = original
        (-chosen.mean()).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        results.append((chosen.detach(), owner, grads))
    (shared, owner_s, grads_s), (plain, owner_p, grads_p) = results
    assert torch.equal(owner_s, owner_p)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_s, grads_p):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_trains_the_same_adapter(tmp_path, tiny_base, tiny_task):
    """Recomputing activations in the backward pass saves memory and changes no number."""
    import torch

    weights = []
    for checkpointing in (False, True):
        recipe, root = load_recipe(write_recipe(tmp_path / str(checkpointing), tiny_base, tiny_task,
                                                training={"max_steps": 3, "eval_every": 3,
                                                          "gradient_checkpointing": checkpointing}))
        result = train(recipe, root)
        assert result.model.get_base_model().is_gradient_checkpointing is checkpointing
        weights.append({n: p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n})
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-5, atol=1e-6)
    assert any(t.abs().sum() > 0 for n, t in weights[0].items() if "lora_B" in n)  # the adapter did train


def test_the_bases_rehearsal_answers_are_asked_once_per_base_and_pool(tmp_path, tiny_base, tiny_task, monkeypatch):
    """A second run of the same base and pool reads the base's answers from the cache and trains the same;
    another answer length asks the base again."""
    import gatekeeper.runtime.hf.decoding as decoding

    monkeypatch.setenv("GATEKEEPER_CACHE_DIR", str(tmp_path / "cache"))
    recipe, root = load_recipe(_rehearsal_recipe(tmp_path, tiny_base, tiny_task, True))
    first = train(recipe, root)
    assert len(list((tmp_path / "cache" / "rehearsal").glob("*.json"))) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("the base was asked again")

    real = decoding.greedy
    monkeypatch.setattr(decoding, "greedy", no_generation)
    again = train(recipe, root)
    assert again.record["rehearsal"] == first.record["rehearsal"]
    assert again.record["val_curve"] == first.record["val_curve"]

    monkeypatch.setattr(decoding, "greedy", real)
    longer = recipe.model_copy(update={"data": recipe.data.model_copy(update={
        "rehearsal": recipe.data.rehearsal.model_copy(update={"max_new_tokens": 7})})})
    train(longer, root)
    assert len(list((tmp_path / "cache" / "rehearsal").glob("*.json"))) == 2
