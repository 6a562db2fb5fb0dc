"""GaLore on the tiny model: what trains, how small the optimizer state stays, and the delta bundle served."""

import json

import pytest

from gatekeeper.bundle.loading import load_bundle
from gatekeeper.bundle.recipe import GaloreSettings, TrainingSettings, load_recipe
from gatekeeper.training.loop import train
from gatekeeper.training.versions import write_candidate
from tests.conftest import edit_manifest, write_recipe

RANK = 4
GALORE = {"rank": RANK, "update_proj_gap": 2, "scale": 1.0}


pytestmark = pytest.mark.usefixtures("one_thread")  # before the module's training fixtures


@pytest.fixture(scope="module")
def galore_run(tmp_path_factory, tiny_base, tiny_task):
    """A GaLore candidate trained for a few steps, with the trained model kept for comparison."""
    directory = tmp_path_factory.mktemp("galore")
    recipe, root = load_recipe(write_recipe(
        directory, tiny_base, tiny_task, method="galore", adapter=None, galore=GALORE,
        gates=[{"name": "json_parse", "params": {"min_rate": 0.0}},
               {"name": "task_accuracy", "params": {"min_delta": -1.0, "require_significant": False}},
               {"name": "adapter_effect"}],
    ))
    result = train(recipe, root)
    return result, write_candidate(result, recipe, root)


def test_projected_weights_move_and_their_optimizer_state_is_low_rank(tiny_base):
    import torch

    from gatekeeper.runtime.hf.modeling import load_base_model
    from gatekeeper.training.methods.galore import build_optimizer, split_parameters

    torch.manual_seed(0)
    model = load_base_model(tiny_base, device="cpu")
    projected, plain = split_parameters(model, GaloreSettings(**GALORE))
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head]
    assert sorted(projected) == sorted(f"{n}.weight" for n in linear) and len(projected) == 14
    assert all(p.dim() == 1 for p in plain.values()) and "model.norm.weight" in plain
    assert not model.model.embed_tokens.weight.requires_grad  # frozen, and with it the tied output head
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(projected, plain, GaloreSettings(**GALORE), TrainingSettings(learning_rate=0.01))
    ids = torch.randint(3, 300, (4, 16))
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, param in model.named_parameters():
        moved = not torch.equal(param, before[name])
        assert moved == (name in projected or name in plain), name
    for name, param in projected.items():
        state = optimizer.state[param]
        rows, cols = param.shape
        low_rank = (rows, RANK) if rows >= cols else (RANK, cols)  # "std": project the longer side away
        assert tuple(state["exp_avg"].shape) == low_rank and tuple(state["exp_avg_sq"].shape) == low_rank, name
    for param in plain.values():
        assert optimizer.state[param]["exp_avg"].shape == param.shape


def test_galore_bundle_stores_the_delta_of_every_trained_tensor(galore_run, tiny_base):
    from safetensors.torch import load_file

    from gatekeeper.runtime.hf.delta import read_base_tensors

    result, bundle = galore_run
    manifest = load_bundle(bundle).manifest
    assert (manifest.adapter.method, manifest.adapter.kind) == ("galore", "delta")
    assert sorted(manifest.adapter.files) == ["delta.safetensors"]
    delta = load_file(bundle / "adapter" / "delta.safetensors")
    assert sorted(delta) == sorted(result.trained) and len(delta) == 14 + 5  # linear weights, then norms
    assert "model.embed_tokens.weight" not in delta
    base = read_base_tensors(tiny_base, list(delta))
    trained = dict(result.model.named_parameters())
    for name, difference in delta.items():
        assert difference.abs().max() > 0
        assert (base[name] + difference - trained[name].detach()).abs().max() < 1e-6, name
    record = json.loads((bundle / "training.json").read_text())
    full_adam = 2 * 4 * record["trainable_parameters"]
    assert 0 < record["optimizer_state_bytes"] < full_adam / 2
    assert record["changed_tensors"] == 19 and record["adapter_bytes"] < record["base_bytes"]


def test_galore_bundle_checks_with_the_delta_served_on_the_adapter_side(galore_run, tmp_path):
    from gatekeeper.cli import main

    _, bundle = galore_run
    assert main(["check", str(bundle), "--out", str(tmp_path / "r"), "-q", "--no-cache"]) == 0
    verdict = json.loads((tmp_path / "r" / "verdict.json").read_text())
    effect = next(g for g in verdict["gates"] if g["name"] == "adapter_effect")
    assert effect["status"] == "passed"  # the adapter side really is the trained model, not the base


def test_base_side_is_exactly_the_base_and_adapter_side_the_trained_model(galore_run, tiny_base):
    from gatekeeper.bundle.base import resolve_base
    from gatekeeper.bundle.manifest import messages_for
    from gatekeeper.check import prepare
    from gatekeeper.runtime.hf.runtime import HFRuntime
    from gatekeeper.runtime.requests import Generate, LogLik

    result, bundle = galore_run
    runtime = prepare(bundle).runtime
    params = dict(runtime.model.named_parameters())
    storage = {n: params[n].data_ptr() for n in result.trained}
    plain = HFRuntime(resolve_base(str(tiny_base)), None, None, device="cpu")
    prompts = [messages_for(f"ticket {k}: the outage in area {k}") for k in range(4)]
    gen = [Generate(m, 8) for m in prompts]
    scored = [LogLik(m, '{"priority": "high"}') for m in prompts]
    assert runtime.loglik("base", scored) == plain.loglik("base", scored)  # bit for bit
    adapter = runtime.loglik("adapter", scored)
    assert runtime.generate("base", gen) == plain.generate("base", gen)  # and still after the adapter side
    assert runtime.loglik("base", scored) == plain.loglik("base", scored)
    assert adapter != plain.loglik("base", scored)
    # the adapter side is the trained model (base + delta rounds within float32 precision)
    trained = HFRuntime(resolve_base(str(tiny_base)), None, None, device="cpu")
    trained._model = result.model
    expected = trained.loglik("base", scored)
    assert [r.logprob for r in adapter] == pytest.approx([r.logprob for r in expected], abs=1e-4)
    assert {n: params[n].data_ptr() for n in result.trained} == storage  # the base's own tensors, back in place
    assert len(runtime._swap) == 19


def test_full_kind_serves_the_same_candidate(galore_run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from gatekeeper._util.hashing import sha256_file
    from gatekeeper.bundle.manifest import messages_for
    from gatekeeper.check import prepare
    from gatekeeper.runtime.hf.delta import metadata_for, read_base_tensors
    from gatekeeper.runtime.requests import LogLik

    _, bundle = galore_run
    full = tmp_path / "full"
    shutil.copytree(bundle, full)
    delta = load_file(full / "adapter" / "delta.safetensors")
    base_ref = load_bundle(bundle).manifest.base
    tiny = (bundle / base_ref.ref).resolve()
    base = read_base_tensors(tiny, list(delta))
    save_file({n: base[n] + d for n, d in delta.items()}, full / "adapter" / "delta.safetensors",
              metadata=metadata_for("full", base_ref.sha256))

    def as_full(data):
        data["adapter"]["kind"] = "full"
        data["adapter"]["files"]["delta.safetensors"] = sha256_file(full / "adapter" / "delta.safetensors")
        data["base"]["ref"] = str(tiny)

    edit_manifest(full, as_full)
    scored = [LogLik(messages_for(f"ticket {k}: the slow area"), '{"priority": "low"}') for k in range(3)]
    from_delta = prepare(bundle).runtime.loglik("adapter", scored)
    from_full = prepare(full).runtime.loglik("adapter", scored)
    assert [r.logprob for r in from_full] == pytest.approx([r.logprob for r in from_delta], abs=1e-5)


def test_a_changed_delta_fails_verification(galore_run, tmp_path, capsys):
    import shutil

    from gatekeeper.cli import main

    _, bundle = galore_run
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    weights = copy / "adapter" / "delta.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hash mismatch for adapter/delta.safetensors" in err


@pytest.mark.parametrize("overrides, message", [
    ({"method": "galore", "adapter": {"r": 4}}, "'adapter' holds LoRA settings, which method galore does not use"),
    ({"method": "lora", "galore": {"rank": 4}}, "'galore' settings are given but method is 'lora'"),
    ({"method": "galore", "adapter": None, "galore": {"rank": 0}}, "field 'galore.rank'"),
    ({"method": "galore", "adapter": None, "galore": {"rank": 33}}, r"galore.rank 33 exceeds the smaller side of .*k_proj"),
    ({"method": "galore", "adapter": None, "galore": {"target_modules": ["c_attn"]}}, "match no layer.*q_proj"),
])
def test_bad_galore_recipes_stop_with_one_line(overrides, message, tmp_path, tiny_base, tiny_task, capsys):
    import re

    from gatekeeper.cli import main

    recipe = write_recipe(tmp_path / "r", tiny_base, tiny_task, **overrides)
    assert main(["train", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("gatekeeper: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]) and "Traceback" not in err, err
    assert not list((tmp_path / "r").glob("v*"))


def test_gates_that_need_a_lora_adapter_say_they_do_not_apply():
    from gatekeeper.gating.engine import run_gates
    from gatekeeper.testing import FakeRuntime
    from tests.conftest import fake_bundle

    class MergeOnly:
        name, sides, adapter_kinds = "merge_only", ("adapter",), ("lora",)

        def requests(self, ctx):
            raise AssertionError("a gate that does not apply is not asked for requests")

    bundle = fake_bundle({"eval": [{"id": "a", "input": "x", "expected": {"priority": "low", "reason": "r"}}]})
    runtime = FakeRuntime({"adapter": str, "base": str})
    [lora] = run_gates(bundle, [(MergeOnly(), True)], runtime)
    assert lora.status == "error"  # on a LoRA bundle it runs (and this one raises)
    bundle.manifest = bundle.manifest.model_copy(update={"adapter": bundle.manifest.adapter.model_copy(
        update={"method": "galore", "kind": "delta"})})
    [delta] = run_gates(bundle, [(MergeOnly(), True)], runtime)
    assert delta.status == "skipped" and "adapter kinds lora" in delta.skip_reason and "'delta'" in delta.skip_reason
    assert runtime.calls == []
