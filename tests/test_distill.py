"""Rehearsal by distillation: KL(base || adapter) on the rehearsal rows, the base being the adapter switched off."""

import pytest

from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.cli import main
from gatekeeper.training.loop import train
from tests.conftest import OTHER_REQUESTS, PROMPT_USER, write_jsonl, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(tmp_path, tiny_base, tiny_task, name, rehearsal=None, **overrides):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"id": f"r{k}", "input": t, "expected": None}
                                                 for k, t in enumerate(OTHER_REQUESTS[:16])])
    data = {"train": str(tiny_task / "train.jsonl"), "validation": str(tiny_task / "validation.jsonl"),
            "eval": str(tiny_task / "eval.jsonl"), "contract": str(tiny_task / "contract.schema.json"),
            "prompt": {"user": PROMPT_USER}}
    if rehearsal is not None:
        data["rehearsal"] = {"prompts": str(pool), "per_batch": 4, "max_new_tokens": 6, **rehearsal}
    training = {"batch_size": 8, "max_steps": 12, "eval_every": 6, "learning_rate": 0.03, "warmup_steps": 1}
    return write_recipe(tmp_path / name, tiny_base, tiny_task, data=data, training=training, **overrides)


def _lora(tiny_base, init_lora_weights):
    import torch
    from peft import LoraConfig, get_peft_model

    from gatekeeper.runtime.hf.modeling import load_base_model

    torch.manual_seed(0)
    return get_peft_model(load_base_model(tiny_base, device="cpu"), LoraConfig(
        r=4, target_modules="all-linear", init_lora_weights=init_lora_weights, task_type="CAUSAL_LM"))


def _encoded(tiny_base, count: int = 4, answers=("a short answer here",)):
    from gatekeeper.bundle.manifest import messages_for
    from gatekeeper.runtime.prompts import encode_example, load_tokenizer
    from gatekeeper.training.data import Encoded

    tokenizer = load_tokenizer(tiny_base)
    return [Encoded(str(k), *encode_example(tokenizer, messages_for(t), answers[k % len(answers)]))
            for k, t in enumerate(OTHER_REQUESTS[:count])], tokenizer.pad_token_id


def _rows(tiny_base):
    from gatekeeper.training.data import collate

    return collate(*_encoded(tiny_base))


def test_the_loss_is_zero_with_the_adapter_off_and_positive_with_it_on(tiny_base):
    import torch

    from gatekeeper.training.distill import distillation_loss
    from gatekeeper.training.methods.base import TrainingMethod

    ids, mask, labels = _rows(tiny_base)
    moved = _lora(tiny_base, init_lora_weights=False)  # random A and B: the adapter changes the answers
    on = distillation_loss(moved, TrainingMethod.base_side, ids, mask, labels)
    assert float(on.detach()) > 1e-4
    on.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in moved.parameters() if p.requires_grad)
    with moved.disable_adapter():
        assert float(distillation_loss(moved, TrainingMethod.base_side, ids, mask, labels)) == 0.0
    fresh = _lora(tiny_base, init_lora_weights=True)  # B = 0: the untrained adapter is the base
    assert float(distillation_loss(fresh, TrainingMethod.base_side, ids, mask, labels)) == 0.0
    # the teacher is the base even while the student is not: switching the adapter off is undone after
    with torch.no_grad():
        assert float(distillation_loss(moved, TrainingMethod.base_side, ids, mask, labels)) == pytest.approx(float(on.detach()))


def test_the_base_states_computed_once_give_the_loss_and_gradients_of_running_the_base(tiny_base):
    """What each step reads from ``BaseTeacher`` is what running the base on that batch gives,
    whatever rows the batch draws and in whatever order."""
    import contextlib

    import torch

    from gatekeeper.training.data import collate
    from gatekeeper.training.distill import BaseTeacher, distillation_loss
    from gatekeeper.training.methods.base import TrainingMethod

    rows, pad_id = _encoded(tiny_base, 8, answers=("yes", "a short answer here", "the longest answer of them all, by far"))
    moved = _lora(tiny_base, init_lora_weights=False)
    teacher = BaseTeacher(moved, TrainingMethod.base_side, rows, pad_id, torch.device("cpu"), contextlib.nullcontext)
    assert sorted(teacher.states) == sorted(r.id for r in rows)
    batch = [rows[6], rows[1], rows[4], rows[3]]  # not the order, nor the company, the states were computed in
    ids, mask, labels = collate(batch, pad_id)
    losses, grads = [], []
    for hidden in (None, teacher.hidden(batch)):
        moved.zero_grad()
        loss = distillation_loss(moved, TrainingMethod.base_side, ids, mask, labels, teacher_hidden=hidden)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append({n: p.grad.clone() for n, p in moved.named_parameters() if p.requires_grad})
    assert losses[0] > 1e-4 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6)
    # the rows are told apart: row 0 answers as row 3 does, to another request, and its states do not fit
    wrong = distillation_loss(moved, TrainingMethod.base_side, ids, mask, labels,
                              teacher_hidden=teacher.hidden([rows[6], rows[1], rows[4], rows[0]]))
    assert float(wrong.detach()) != pytest.approx(losses[0], rel=1e-3)


def test_weight_zero_trains_exactly_as_no_rehearsal(tmp_path, tiny_base, tiny_task):
    import torch

    results = {}
    for name, rehearsal in (("none", None), ("zero", {"mode": "distill", "weight": 0.0})):
        recipe, root = load_recipe(_recipe(tmp_path, tiny_base, tiny_task, name, rehearsal))
        results[name] = train(recipe, root)
    assert results["zero"].record["rehearsal"]["mode"] == "distill"
    assert results["zero"].record["val_curve"] == results["none"].record["val_curve"]
    assert results["zero"].record["train_curve"] == results["none"].record["train_curve"]
    plain = dict(results["none"].model.named_parameters())
    for name, param in results["zero"].model.named_parameters():
        assert torch.equal(param, plain[name]), name


def test_distillation_keeps_the_base_distribution_on_requests_never_rehearsed(tmp_path, tiny_base, tiny_task):
    import torch

    from gatekeeper.training.data import collate
    from gatekeeper.training.distill import distillation_loss
    from gatekeeper.training.methods.base import TrainingMethod
    from gatekeeper.training.rehearsal import base_answers

    held_out = write_jsonl(tmp_path / "held-out.jsonl", [{"id": f"h{k}", "input": t, "expected": None}
                                                         for k, t in enumerate(OTHER_REQUESTS[16:])])
    divergence = {}
    for name, rehearsal in (("none", None), ("distill", {"mode": "distill", "weight": 5.0})):
        recipe, root = load_recipe(_recipe(tmp_path, tiny_base, tiny_task, name, rehearsal))
        result = train(recipe, root)
        with result.model.disable_adapter():  # what the base itself says to requests nobody trained on
            rows, _ = base_answers(result.model, result.tokenizer, held_out, 8, 6, seed=0)
        ids, mask, labels = collate(rows, result.tokenizer.pad_token_id)
        with torch.no_grad():
            divergence[name] = float(distillation_loss(result.model, TrainingMethod.base_side, ids, mask, labels))
        if name == "distill":
            assert (result.record["rehearsal"]["mode"], result.record["rehearsal"]["weight"]) == ("distill", 5.0)
    # measured: 0.029 without rehearsal, 0.009 with it
    assert divergence["distill"] < 0.5 * divergence["none"], divergence


@pytest.mark.parametrize("change, message", [
    ({"rehearsal": {"mode": "distill"}, "method": "galore", "adapter": None},
     "data.rehearsal.mode 'distill' needs an adapter method"),
    ({"rehearsal": {"weight": 0.5}}, "weight applies to mode 'distill' only"),
    ({"rehearsal": {"mode": "distill", "weight": -1}}, "greater than or equal to 0"),
    ({"rehearsal": {"mode": "teach"}}, "'answers' or 'distill'"),
])
def test_settings_that_cannot_work_are_one_line_before_training(change, message, tmp_path, tiny_base, tiny_task, capsys):
    rehearsal = change.pop("rehearsal")
    recipe = _recipe(tmp_path, tiny_base, tiny_task, "bad", rehearsal, **change)
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
