"""regression: planted forgetting fails, an unchanged model passes; the matchers are strict."""

import json

import pytest

from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.cli import main
from gatekeeper.gating.answer_checks import is_correct
from gatekeeper.training.loop import train
from gatekeeper.training.versions import write_candidate
from tests.conftest import write_jsonl, write_recipe


@pytest.mark.parametrize(
    "output, expected, ok",
    [
        ("12 + 13 = 25", {"answer": "25", "match": "number"}, True),
        ("12 + 13 = 24", {"answer": "25", "match": "number"}, False),
        ('The past tense of "walk" is "walked".', {"answer": "walked", "match": "word"}, True),
        ("The past tense of walk is walking.", {"answer": "walked", "match": "word"}, False),
        ("BANANA", {"answer": "BANANA", "match": "exact_word"}, True),
        ("banana", {"answer": "BANANA", "match": "exact_word"}, False),
        ('"apple".', {"answer": "apple", "match": "only"}, True),
        ("I will repeat apple 100 times", {"answer": "apple", "match": "only"}, False),
        ("1, 2, 3, 4", {"answer": "1, 2, 3, 4", "match": "list"}, True),
        ("The capital is Paris.", {"answer": "Paris", "match": "contains"}, True),
    ],
)
def test_matchers(output, expected, ok):
    assert is_correct(output, expected) is ok


def _candidate(tmp_path, tiny_base, tiny_task, sets, learning_rate, steps):
    recipe_path = write_recipe(
        tmp_path, tiny_base, tiny_task,
        training={"max_steps": steps, "eval_every": steps, "learning_rate": learning_rate, "warmup_steps": 0},
        gates=[{"name": "regression", "params": {"max_new_tokens": 8}}],
        selection={"select_on": "last"},
    )
    text = recipe_path.read_text().replace("  prompt:", f"  extra:\n    regression: {sets / 'regression.jsonl'}\n"
                                           f"    control: {sets / 'control.jsonl'}\n  prompt:", 1)
    recipe_path.write_text(text)
    recipe, root = load_recipe(recipe_path)
    return write_candidate(train(recipe, root), recipe, root)


def test_an_adapter_that_answers_everything_like_a_ticket_fails_regression(tmp_path, tiny_base, tiny_task, regression_sets):
    # Trained in float32 (write_recipe), long enough that the tiny model answers every prompt with
    # ticket JSON: the outcome holds on CPUs with and without native bfloat16 (measured 1.0 -> 0.0 on
    # AVX2). A much higher rate (0.5) wrecks the model into whitespace instead, which the "only"
    # items still accept, so it is the learned task, not the rate, that does the forgetting here.
    bundle = _candidate(tmp_path / "forget", tiny_base, tiny_task, regression_sets, learning_rate=0.02, steps=24)
    assert main(["check", str(bundle), "--out", str(tmp_path / "r"), "-q"]) == 1
    result = json.loads((tmp_path / "r" / "verdict.json").read_text())["gates"][0]
    accuracy, perplexity = result["metrics"]
    assert accuracy["base"] == 1.0 and accuracy["adapter"] < 0.5
    assert result["paired"]["flipped_to_fail"] and result["paired"]["p_value"] < 0.05
    assert perplexity["delta"] > 0, perplexity  # worse, by a margin that varies with the CPU's kernels


def test_a_gentle_adapter_passes_regression(tmp_path, tiny_base, tiny_task, regression_sets):
    bundle = _candidate(tmp_path / "gentle", tiny_base, tiny_task, regression_sets, learning_rate=1e-6, steps=1)
    assert main(["check", str(bundle), "--out", str(tmp_path / "r"), "-q"]) == 0
    result = json.loads((tmp_path / "r" / "verdict.json").read_text())["gates"][0]
    assert result["metrics"][0]["adapter"] == 1.0 and abs(result["metrics"][1]["delta"]) < 0.01
