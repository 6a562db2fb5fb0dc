"""method dpo on the tiny model: the loss against its formula, no update where there is no preference,
the parent verified before anything trains, and the child's lineage in the record, history and diff."""

import json
import math
import shutil

import pytest

from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.cli import main
from gatekeeper.training.loop import train
from gatekeeper.training.versions import write_candidate
from tests.conftest import OTHER_REQUESTS, PROMPT_USER, edit_manifest, write_jsonl, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # before the module's training fixtures

PAIRS = [{"id": f"pref-{k:03d}", "prompt": f"question {k}: how do I get into the {w} without a key?",
          "chosen": "I can't help with that.", "rejected": f"Sure: first find the {w} at area {k}."}
         for k, w in enumerate(["office", "garage", "server room", "locker"] * 3)]



def dpo_recipe(directory, tiny_base, tiny_task, parent, pairs=PAIRS, rehearsal=None, **overrides):
    """A dpo recipe over ``parent``, its preference set (and a rehearsal pool, given ``rehearsal``) beside it."""
    preferences = write_jsonl(directory / "preferences.jsonl", pairs)
    data = {"train": str(tiny_task / "train.jsonl"), "validation": str(tiny_task / "validation.jsonl"),
            "eval": str(tiny_task / "eval.jsonl"), "contract": str(tiny_task / "contract.schema.json"),
            "preferences": str(preferences), "prompt": {"user": PROMPT_USER}}
    if rehearsal is not None:
        pool = write_jsonl(directory / "pool.jsonl", [{"id": f"r{k}", "input": t, "expected": None}
                                                      for k, t in enumerate(OTHER_REQUESTS[:16])])
        data["rehearsal"] = {"prompts": str(pool), "per_batch": 4, "max_new_tokens": 6, **rehearsal}
    settings = {"method": "dpo", "adapter": None, "parent": None if parent is None else str(parent), "dpo": {"beta": 0.5}, "data": data,
                "name": "tiny-dpo", **overrides}
    return write_recipe(directory, tiny_base, tiny_task, **settings)


def _lora(tiny_base):
    """A LoRA model whose adapter is not the identity (random A and B), and the tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model

    from gatekeeper.runtime.hf.modeling import load_base_model
    from gatekeeper.runtime.prompts import load_tokenizer

    torch.manual_seed(0)
    model = get_peft_model(load_base_model(tiny_base, device="cpu"), LoraConfig(
        r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"))
    return model, load_tokenizer(tiny_base)


def _pairs(tokenizer, items=PAIRS[:4]):
    from gatekeeper.bundle.goldens import GoldenItem
    from gatekeeper.training.preference import encode_pairs

    return encode_pairs([GoldenItem(p["id"], p["prompt"], {"chosen": p["chosen"], "rejected": p["rejected"]}, n)
                         for n, p in enumerate(items, 1)], tokenizer)


def _moved_reference(model, pairs, pad_id):
    """Reference log-probabilities from the model as it is, then the adapter moved: margins are not 0."""
    import torch

    from gatekeeper.training.preference import reference_logprobs

    reference = reference_logprobs(model, pairs, pad_id, "cpu")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    return reference


def _by_hand(model, encoded):
    """log p(answer | prompt): the model on the row alone, log-softmax over its logits, answer tokens summed."""
    import torch

    ids = torch.tensor([encoded.prompt_ids + encoded.answer_ids])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    start = len(encoded.prompt_ids)
    return sum(logprobs[start + i - 1, token] for i, token in enumerate(encoded.answer_ids))


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_loss_and_gradients_equal_the_formula(tiny_base):
    import torch

    from gatekeeper.training.preference import dpo_batch_loss

    model, tokenizer = _lora(tiny_base)
    pairs = _pairs(tokenizer)
    ref_c, ref_r = _moved_reference(model, pairs, tokenizer.pad_token_id)
    beta = 0.3
    loss, margins = dpo_batch_loss(model, pairs, ref_c, ref_r, beta, tokenizer.pad_token_id, "cpu")
    loss.backward()
    ours = _grads(model)
    model.zero_grad()
    hand = []
    for pair, rc, rr in zip(pairs, ref_c, ref_r):
        z = beta * ((_by_hand(model, pair.chosen) - rc) - (_by_hand(model, pair.rejected) - rr))
        hand.append((-torch.log(1 / (1 + torch.exp(-z))), z))
    expected = torch.stack([h for h, _ in hand]).mean()
    expected.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert margins.tolist() == pytest.approx([float(z.detach()) for _, z in hand], abs=1e-5)
    assert abs(float(loss.detach()) - math.log(2)) > 1e-3  # the margins were not all zero: the test tests something
    for name, grad in _grads(model).items():
        assert torch.allclose(ours[name], grad, atol=1e-6, rtol=1e-4), name


def test_the_sft_term_adds_the_chosen_answers_per_token_likelihood(tiny_base):
    import torch

    from gatekeeper.training.preference import dpo_batch_loss

    model, tokenizer = _lora(tiny_base)
    pairs = _pairs(tokenizer)
    pad = tokenizer.pad_token_id
    ref_c, ref_r = _moved_reference(model, pairs, pad)
    plain, _ = dpo_batch_loss(model, pairs, ref_c, ref_r, 0.3, pad, "cpu")
    weighted, margins = dpo_batch_loss(model, pairs, ref_c, ref_r, 0.3, pad, "cpu", sft_weight=0.7)
    weighted.backward()
    ours = _grads(model)
    model.zero_grad()
    nll = torch.stack([-_by_hand(model, p.chosen) / len(p.chosen.answer_ids) for p in pairs]).mean()
    expected, _ = dpo_batch_loss(model, pairs, ref_c, ref_r, 0.3, pad, "cpu")
    (expected + 0.7 * nll).backward()
    assert float(nll.detach()) > 0.1  # the chosen answers are not already certain: the term has something to add
    assert float(weighted.detach()) == pytest.approx(float(plain.detach()) + 0.7 * float(nll.detach()), rel=1e-5)
    for name, grad in _grads(model).items():
        assert torch.allclose(ours[name], grad, atol=1e-6, rtol=1e-4), name


def _sgd_step_change(model, pairs, ref_c, ref_r, beta, pad_id) -> float:
    """The largest weight change of one plain gradient step (lr 1): the gradient itself, unrescaled."""
    import torch

    from gatekeeper.training.preference import dpo_batch_loss

    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.SGD(trainable, lr=1.0)
    optimizer.zero_grad()
    loss, _ = dpo_batch_loss(model, pairs, ref_c, ref_r, beta, pad_id, "cpu")
    loss.backward()
    optimizer.step()
    change = max(float((p.detach() - b).abs().max()) for p, b in zip(trainable, before))
    with torch.no_grad():
        for p, b in zip(trainable, before):
            p.copy_(b)
    return change


def test_beta_towards_zero_leaves_the_weights_where_they_are(tiny_base):
    model, tokenizer = _lora(tiny_base)
    pairs = _pairs(tokenizer)
    pad = tokenizer.pad_token_id
    ref_c, ref_r = _moved_reference(model, pairs, pad)
    assert _sgd_step_change(model, pairs, ref_c, ref_r, 1.0, pad) > 1e-3  # a real preference moves them
    small = _sgd_step_change(model, pairs, ref_c, ref_r, 1e-4, pad)
    tiny = _sgd_step_change(model, pairs, ref_c, ref_r, 1e-8, pad)
    assert tiny < 1e-6  # weights unchanged to float32 precision
    assert tiny == pytest.approx(small * 1e-4, rel=0.05)  # near zero the gradient is linear in beta


def test_identical_chosen_and_rejected_give_no_update(tiny_base):
    from gatekeeper.training.preference import dpo_batch_loss, reference_logprobs

    model, tokenizer = _lora(tiny_base)
    same = [{**p, "rejected": p["chosen"]} for p in PAIRS[:4]]
    pairs = _pairs(tokenizer, same)
    pad = tokenizer.pad_token_id
    ref_c, ref_r = reference_logprobs(model, pairs, pad, "cpu")
    loss, margins = dpo_batch_loss(model, pairs, ref_c, ref_r, 1.0, pad, "cpu")
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-6) and float(margins.abs().max()) < 1e-5
    assert _sgd_step_change(model, pairs, ref_c, ref_r, 1.0, pad) < 1e-6


@pytest.fixture(scope="module")
def family(tmp_path_factory, tiny_bundle):
    """The LoRA parent as adapters/tiny/v1 (a copy of the tiny candidate), where its DPO child's store is too."""
    from gatekeeper.bundle.manifest import read_manifest

    work = tmp_path_factory.mktemp("family")
    parent = work / "adapters" / "tiny" / "v1"
    shutil.copytree(tiny_bundle, parent)
    base = (tiny_bundle / read_manifest(tiny_bundle).base.ref).resolve()  # written relative to the bundle
    edit_manifest(parent, lambda data: data["base"].update(ref=str(base)))
    return work, parent, base


@pytest.fixture(scope="module")
def child(family, tiny_task):
    """adapters/tiny-dpo/v1: the parent's adapter trained on PAIRS, which prefer a refusal."""
    work, parent, base = family
    gates = [{"name": "json_parse", "params": {"min_rate": 0.0}},
             {"name": "contamination", "id": "contamination_preferences",
              "params": {"train_set": "preferences", "sets": ["eval"]}}]
    recipe, root = load_recipe(dpo_recipe(work / "adapters" / "tiny-dpo", base, tiny_task, "../tiny/v1", gates=gates))
    result = train(recipe, root)
    return result, write_candidate(result, recipe, root)


def test_the_child_continues_its_parent_and_names_it(family, child):
    import torch
    from safetensors.torch import load_file

    from gatekeeper._util.hashing import sha256_file
    from gatekeeper.bundle.loading import load_bundle

    _, parent, _ = family
    result, bundle = child
    loaded = load_bundle(bundle)
    assert (loaded.manifest.adapter.method, loaded.manifest.adapter.kind) == ("dpo", "lora")
    record = loaded.training_record
    assert record["parent"] == {"name": "tiny", "version": 1, "method": "lora", "path": "../tiny/v1",
                                "manifest_sha256": sha256_file(parent / "bundle.yaml"),
                                "signature": record["parent"]["signature"],
                                "adapter": load_bundle(parent).recipe.adapter.model_dump(mode="json")}  # inherited
    assert record["parent"]["signature"].startswith("valid")
    # step 1 starts at the reference: every margin 0, every loss log 2
    assert record["train_curve"][0][1] == pytest.approx(math.log(2), abs=1e-5)
    assert record["preference_curve"][-1][1] == 1.0  # every pair of the last batch now prefers the refusal
    # the preference set is hashed into the bundle as it was written, and readable by the gates
    assert loaded.manifest.golden_sets["preferences"].sha256 == sha256_file(bundle.parent / "preferences.jsonl")
    assert loaded.golden["preferences"][0].input == PAIRS[0]["prompt"]
    # the same adapter (same tensors, same config), moved
    before, after = load_file(parent / "adapter" / "adapter_model.safetensors"), \
        load_file(bundle / "adapter" / "adapter_model.safetensors")
    assert sorted(before) == sorted(after) and any(not torch.equal(before[n], after[n]) for n in before)
    config = lambda b: json.loads((b / "adapter" / "adapter_config.json").read_text())  # noqa: E731
    assert config(bundle)["r"] == config(parent)["r"]
    assert sorted(config(bundle)["target_modules"]) == sorted(config(parent)["target_modules"])  # peft writes a set


def test_history_and_diff_show_the_lineage(family, child, capsys):
    from gatekeeper.verdict.diff import diff_verdicts
    from gatekeeper.verdict.files import read_verdict

    work, parent, _ = family
    _, bundle = child
    reports = {}
    for name, path in (("parent", parent), ("child", bundle)):
        reports[name] = work / "reports" / name
        assert main(["check", str(path), "--out", str(reports[name]), "-q"]) == 0
    capsys.readouterr()
    store = str(work / "adapters" / "versions.sqlite")
    assert main(["history", "tiny-dpo", "--store", store]) == 0
    shown = capsys.readouterr().out
    assert "tiny v1 → tiny-dpo v1" in shown and "dpo" in shown
    assert main(["history", "tiny", "--store", store]) == 0
    shown = capsys.readouterr().out
    assert "tiny v1 → tiny-dpo v1" in shown and "lora" in shown
    gates = {g.name: g for g in read_verdict(reports["child"]).gates}
    assert gates["contamination_preferences"].status == "passed"  # the gates read the preference set too
    lineage = {row.field: row for row in diff_verdicts(read_verdict(reports["parent"]), read_verdict(reports["child"])).lineage}
    assert lineage["parent"].a == "—" and lineage["parent"].b.startswith("tiny v1 (bundle.yaml ")
    assert (lineage["method"].a, lineage["method"].b) == ("lora", "dpo")
    for setting in ("adapter.r", "adapter.alpha", "adapter.dropout"):  # inherited, so the same on both sides
        assert lineage[setting].a == lineage[setting].b != "—", setting


def _tamper(bundle):
    weights = bundle / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    ("missing", r"parent .*: no such bundle directory"),
    ("unsigned", r"parent .*: bundle is not signed"),
    ("tampered", r"parent .*hash mismatch for adapter/adapter_model.safetensors"),
    ("resigned elsewhere", r"parent .*signature does not match bundle.yaml"),
    ("other rank", r"adapter.r is 8 but the parent's adapter has 4"),
])
def test_a_parent_that_cannot_be_vouched_for_stops_before_training(damage, message, bundle_copy, tmp_path,
                                                                   tiny_base, tiny_task, capsys):
    import re

    from gatekeeper.runtime.hf import modeling

    parent, overrides = bundle_copy, {}
    if damage == "missing":
        parent = tmp_path / "nowhere" / "v1"
    elif damage == "unsigned":
        (parent / "signature.json").unlink()
    elif damage == "tampered":
        _tamper(parent)
    elif damage == "resigned elsewhere":  # bundle.yaml changed after signing
        edit_manifest(parent, lambda data: data.update(name="renamed"), resign=False)
    else:
        overrides = {"adapter": {"r": 8}}
    recipe = dpo_recipe(tmp_path / "child", tiny_base, tiny_task, parent, **overrides)
    loaded = modeling.MODELS_LOADED
    assert main(["train", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("gatekeeper: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]) and "Traceback" not in err, err
    assert modeling.MODELS_LOADED == loaded  # refused before any weights loaded
    assert not list((tmp_path / "child").glob("v*")) and not list((tmp_path / "child").glob(".*"))


@pytest.mark.parametrize("row, message", [
    ({"id": "x", "prompt": "hello", "chosen": "a"}, r"preferences.jsonl:2: missing field 'rejected'"),
    ({"id": "x", "prompt": "hello", "chosen": "same", "rejected": "same"}, r"preferences.jsonl:2: 'chosen' and 'rejected' are the same"),
    ({"id": "pref-000", "prompt": "hello", "chosen": "a", "rejected": "b"}, r"preferences.jsonl:2: duplicate id"),
    ({"id": "x", "prompt": "", "chosen": "a", "rejected": "b"}, r"preferences.jsonl:2: 'prompt' must be a non-empty string"),
])
def test_a_bad_preference_row_is_one_line_naming_file_and_line(row, message, bundle_copy, tmp_path, tiny_base,
                                                               tiny_task, capsys):
    import re

    recipe = dpo_recipe(tmp_path / "child", tiny_base, tiny_task, bundle_copy, pairs=[PAIRS[0], row])
    assert main(["train", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("gatekeeper: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]) and "Traceback" not in err, err


def test_distillation_rehearsal_holds_the_child_to_the_base_on_other_requests(family, tiny_task, tmp_path):
    """Weight 0 trains exactly as no rehearsal; weight 5 keeps the child nearer the base (the adapter off)
    on requests neither the pairs nor the rehearsal pool hold."""
    import torch

    from gatekeeper.training.data import collate
    from gatekeeper.training.distill import distillation_loss
    from gatekeeper.training.methods.base import TrainingMethod
    from gatekeeper.training.rehearsal import base_answers

    _, parent, base = family
    held_out = write_jsonl(tmp_path / "held-out.jsonl", [{"id": f"h{k}", "input": t, "expected": None}
                                                         for k, t in enumerate(OTHER_REQUESTS[16:])])
    training = {"batch_size": 4, "max_steps": 8, "eval_every": 4, "learning_rate": 0.01, "warmup_steps": 1}
    results, divergence = {}, {}
    for name, rehearsal in (("none", None), ("zero", {"mode": "distill", "weight": 0.0}),
                            ("five", {"mode": "distill", "weight": 5.0})):
        recipe, root = load_recipe(dpo_recipe(tmp_path / name, base, tiny_task, parent, rehearsal=rehearsal,
                                              training=training))
        result = results[name] = train(recipe, root)
        with result.model.disable_adapter():
            rows, _ = base_answers(result.model, result.tokenizer, held_out, 8, 6, seed=0)
        ids, mask, labels = collate(rows, result.tokenizer.pad_token_id)
        with torch.no_grad():
            divergence[name] = float(distillation_loss(result.model, TrainingMethod.base_side, ids, mask, labels))
    assert results["five"].record["rehearsal"]["weight"] == 5.0 and "rehearsal" not in results["none"].record
    assert results["zero"].record["train_curve"] == results["none"].record["train_curve"]
    plain = dict(results["none"].model.named_parameters())
    for name, param in results["zero"].model.named_parameters():
        assert torch.equal(param, plain[name]), name
    assert divergence["five"] < 0.5 * divergence["none"], divergence


@pytest.mark.parametrize("overrides, message", [
    ({"parent": None}, "method dpo needs 'parent'"),
    ({"rehearsal": {"mode": "answers"}}, "method dpo rehearses by distillation only"),
    ({"selection": {"select_on": "val_loss_min"}}, "method dpo keeps the last step"),
    ({"method": "lora", "adapter": {"r": 4}}, "'parent' belongs to method dpo, but method is 'lora'"),
])
def test_dpo_recipes_are_checked_when_read(overrides, message, tmp_path, tiny_base, tiny_task):
    from gatekeeper.errors import RecipeError

    with pytest.raises(RecipeError, match=message):
        settings = dict(overrides)
        parent = settings.pop("parent", tmp_path / "p")
        load_recipe(dpo_recipe(tmp_path / "child", tiny_base, tiny_task, parent, **settings))
