"""method full on the tiny model: every weight trains with AdamW, the bundle is the delta kind GaLore writes."""

import json

import pytest

from gatekeeper.bundle.loading import load_bundle
from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.training.loop import train
from gatekeeper.training.versions import write_candidate
from tests.conftest import write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # before the module's training fixture

GATES = [{"name": "json_parse", "params": {"min_rate": 0.0}},
         {"name": "task_accuracy", "params": {"min_delta": -1.0, "require_significant": False}},
         {"name": "adapter_effect"}]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_base, tiny_task):
    """A full fine-tune of a few steps, with the trained model kept for comparison."""
    recipe, root = load_recipe(write_recipe(tmp_path_factory.mktemp("full"), tiny_base, tiny_task,
                                            method="full", adapter=None, gates=GATES))
    result = train(recipe, root)
    return result, write_candidate(result, recipe, root)


def test_every_weight_trains_and_the_bundle_stores_each_as_a_delta(full_run, tiny_base):
    from safetensors.torch import load_file

    from gatekeeper.runtime.hf.delta import read_base_tensors

    result, bundle = full_run
    names = [n for n, _ in result.model.named_parameters()]  # the tied output head is the embedding, listed once
    assert result.trained == sorted(names) and "model.embed_tokens.weight" in names
    manifest = load_bundle(bundle).manifest
    assert (manifest.adapter.method, manifest.adapter.kind) == ("full", "delta")
    delta = load_file(bundle / "adapter" / "delta.safetensors")
    assert sorted(delta) == result.trained  # every tensor moved, embeddings too
    base = read_base_tensors(tiny_base, list(delta))
    trained = dict(result.model.named_parameters())
    for name, difference in delta.items():
        assert (base[name] + difference - trained[name].detach()).abs().max() < 1e-6, name
    record = json.loads((bundle / "training.json").read_text())
    assert record["method"] == "full" and record["changed_tensors"] == len(names)
    # plain AdamW: two float32 moments for every trained weight (GaLore keeps far less)
    assert record["optimizer_state_bytes"] >= 2 * 4 * record["trainable_parameters"]


def test_the_loaded_candidate_answers_as_the_trained_model(full_run, tiny_base):
    from gatekeeper.bundle.base import resolve_base
    from gatekeeper.bundle.manifest import messages_for
    from gatekeeper.check import prepare
    from gatekeeper.runtime.hf.runtime import HFRuntime
    from gatekeeper.runtime.requests import LogLik

    result, bundle = full_run
    runtime = prepare(bundle).runtime
    scored = [LogLik(messages_for(f"ticket {k}: the broken area {k}"), '{"priority": "high"}') for k in range(4)]
    trained = HFRuntime(resolve_base(str(tiny_base)), None, None, device="cpu")
    trained._model = result.model
    plain = HFRuntime(resolve_base(str(tiny_base)), None, None, device="cpu")
    adapter, expected = runtime.loglik("adapter", scored), trained.loglik("base", scored)
    assert [r.logprob for r in adapter] == pytest.approx([r.logprob for r in expected], abs=1e-4)
    assert runtime.loglik("base", scored) == plain.loglik("base", scored)  # base side untouched, bit for bit
    assert [r.logprob for r in adapter] != [r.logprob for r in plain.loglik("base", scored)]


def test_a_full_candidate_is_checked_like_any_other(full_run, tmp_path):
    from gatekeeper.cli import main

    _, bundle = full_run
    assert main(["check", str(bundle), "--out", str(tmp_path / "r"), "-q", "--no-cache"]) == 0
    verdict = json.loads((tmp_path / "r" / "verdict.json").read_text())
    assert next(g for g in verdict["gates"] if g["name"] == "adapter_effect")["status"] == "passed"
    assert verdict["bundle"]["training"]["method"] == "full"


@pytest.mark.parametrize("overrides, message", [
    ({"adapter": {"r": 4}}, "'adapter' holds LoRA settings, which method full does not use"),
    ({"adapter": None, "galore": {"rank": 4}}, "'galore' settings are given but method is 'full'"),
    ({"adapter": None, "parent": "../v1"}, "'parent' belongs to method dpo, but method is 'full'"),
])
def test_settings_a_full_fine_tune_does_not_use_stop_with_one_line(overrides, message, tmp_path, tiny_base,
                                                                   tiny_task, capsys):
    from gatekeeper.cli import main

    recipe = write_recipe(tmp_path / "r", tiny_base, tiny_task, method="full", **overrides)
    assert main(["train", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("gatekeeper: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not list((tmp_path / "r").glob("v*"))


def test_distillation_rehearsal_is_refused_as_for_galore(tmp_path, tiny_base, tiny_task):
    from gatekeeper.errors import RecipeError

    recipe = write_recipe(tmp_path / "r", tiny_base, tiny_task, method="full", adapter=None)
    text = recipe.read_text().replace("  prompt:", f"  rehearsal:\n    prompts: {tiny_task / 'eval.jsonl'}\n"
                                                   "    mode: distill\n  prompt:", 1)
    recipe.write_text(text)
    with pytest.raises(RecipeError, match="full trains the base's own weights"):
        load_recipe(recipe)
