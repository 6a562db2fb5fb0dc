"""training.field_weights: the tokens of named answer fields weigh more in the task loss."""

import pytest

from gatekeeper.bundle.goldens import GoldenItem, answer_text
from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.cli import main
from gatekeeper.training.data import collate, encode, field_spans, labelled_weights
from gatekeeper.training.loop import train
from tests.conftest import PROMPT_USER, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_field_spans_find_each_value_in_the_written_answer():
    expected = {"priority": "medium", "reason": "a “quoted” reason, with commas", "n": 3}
    text = answer_text(expected)
    spans = field_spans(expected)
    assert {k: text[a:b] for k, (a, b) in spans.items()} == {
        "priority": '"medium"', "reason": '"a “quoted” reason, with commas"', "n": "3"}


def _items():
    return [GoldenItem(id=f"t{k}", input=f"ticket {k}: the printer is slow", line=k + 1,
                       expected={"priority": label, "reason": "printing delayed" + " a bit" * k})
            for k, label in enumerate(["critical", "high", "medium", "low"])]


def test_the_label_tokens_carry_the_weight_in_the_order_the_loss_reads_them(tiny_base):
    from gatekeeper.bundle.manifest import PromptTemplate
    from gatekeeper.runtime.prompts import load_tokenizer

    tokenizer = load_tokenizer(tiny_base)
    items = _items()
    encoded = encode(items, tokenizer, PromptTemplate(user=PROMPT_USER), {"priority": 5.0})
    for item, example in zip(items, encoded):
        heavy = tokenizer.decode([t for t, w in zip(example.answer_ids, example.answer_weights) if w == 5.0])
        assert item.expected["priority"] in heavy and "reason" not in heavy
        assert set(example.answer_weights) == {1.0, 5.0}
    # collate labels every answer token, row by row: the flat weights line up with them
    _, _, labels = collate(encoded, tokenizer.pad_token_id)
    weights = labelled_weights(encoded)
    assert labels[labels != -100].tolist() == [t for e in encoded for t in e.answer_ids]
    assert weights.tolist() == [w for e in encoded for w in e.answer_weights]
    assert labelled_weights(encode(items, tokenizer, PromptTemplate(user=PROMPT_USER))) is None


def _recipe(tmp_path, tiny_base, tiny_task, name, field_weights=None):
    data = {"train": str(tiny_task / "train.jsonl"), "validation": str(tiny_task / "validation.jsonl"),
            "eval": str(tiny_task / "eval.jsonl"), "contract": str(tiny_task / "contract.schema.json"),
            "prompt": {"user": PROMPT_USER}}
    training = {"batch_size": 8, "max_steps": 6, "eval_every": 3, "learning_rate": 0.03, "warmup_steps": 1,
                **({"field_weights": field_weights} if field_weights else {})}
    return write_recipe(tmp_path / name, tiny_base, tiny_task, data=data, training=training)


def test_weight_one_trains_as_no_weights_and_a_heavier_label_trains_otherwise(tmp_path, tiny_base, tiny_task):
    curves = {}
    for name, weights in (("none", None), ("one", {"priority": 1.0}), ("heavy", {"priority": 6.0})):
        recipe, root = load_recipe(_recipe(tmp_path, tiny_base, tiny_task, name, weights))
        record = train(recipe, root).record
        curves[name] = [loss for _, loss in record["train_curve"]]
    assert curves["one"] == pytest.approx(curves["none"], rel=1e-5)
    assert curves["heavy"] != pytest.approx(curves["none"], rel=1e-3)


def test_a_field_no_answer_has_is_refused_before_any_model_loads(tmp_path, tiny_base, tiny_task, capsys):
    recipe = _recipe(tmp_path, tiny_base, tiny_task, "typo", {"priorty": 4.0})
    assert main(["train", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line] == [
        f"gatekeeper: error: training.field_weights names 'priorty', which no answer in {tiny_task / 'train.jsonl'} has"]
    assert not list((tmp_path / "typo").glob("v*"))
