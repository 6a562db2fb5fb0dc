"""adapter_effect: an adapter that does nothing must fail; a trained one passes."""

import json

import pytest
from safetensors.torch import load_file, save_file

from gatekeeper._util.hashing import sha256_file
from gatekeeper.cli import main
from tests.conftest import edit_manifest


def _only_gate(data):
    data["gates"] = [{"name": "adapter_effect"}]


def _rewrite_adapter(bundle, change_weights=None, change_config=None):
    adapter = bundle / "adapter"
    if change_weights:
        weights = load_file(adapter / "adapter_model.safetensors")
        save_file({k: change_weights(k, v) for k, v in weights.items()}, adapter / "adapter_model.safetensors",
                  metadata={"format": "pt"})
    if change_config:
        config = json.loads((adapter / "adapter_config.json").read_text())
        change_config(config)
        (adapter / "adapter_config.json").write_text(json.dumps(config))

    def rehash(data):  # the author re-signs: only the adapter's effect is at fault
        _only_gate(data)
        data["adapter"]["files"] = {p.name: sha256_file(p) for p in sorted(adapter.iterdir())}
    edit_manifest(bundle, rehash)


def _result(out):
    return json.loads((out / "verdict.json").read_text())["gates"][0]


def test_a_trained_adapter_has_an_effect(bundle_copy, tmp_path):
    edit_manifest(bundle_copy, _only_gate)
    assert main(["check", str(bundle_copy), "--out", str(tmp_path), "-q"]) == 0
    assert _result(tmp_path)["metrics"][1]["adapter"] > 0.01


@pytest.mark.parametrize("fault", ["zeroed weights", "zero scaling"])
def test_an_adapter_that_does_nothing_fails(fault, bundle_copy, tmp_path):
    if fault == "zeroed weights":
        _rewrite_adapter(bundle_copy, change_weights=lambda name, value: value * 0)
    else:
        _rewrite_adapter(bundle_copy, change_config=lambda c: c.update(lora_alpha=0))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path), "-q"]) == 1
    result = _result(tmp_path)
    assert result["status"] == "failed" and "behaves like the base" in result["summary"]
    assert result["metrics"][0]["adapter"] == 0.0 and result["metrics"][1]["adapter"] < 1e-6
    assert result["evidence"][0]["base_output"] == result["evidence"][0]["adapter_output"]


@pytest.mark.parametrize("params, scored", [({}, 64), ({"scored_items": 100}, 100)])
def test_log_probabilities_are_scored_on_the_first_items_only(params, scored):
    from gatekeeper.gating.engine import run_gates
    from gatekeeper.gating.registry import get_gate
    from gatekeeper.testing import FakeRuntime
    from tests.conftest import fake_bundle, tiny_items

    runtime = FakeRuntime({"base": lambda text: "a", "adapter": lambda text: "b"})
    gate = get_gate("adapter_effect").build(params)
    result, = run_gates(fake_bundle({"eval": tiny_items("eval", 100)}), [(gate, True)], runtime)
    # per side: one generate call for all 100 items, one loglik call for the scored ones
    assert sorted(runtime.calls) == sorted([("adapter", 100), ("adapter", scored), ("base", 100), ("base", scored)])
    assert result.status == "passed" and result.details["scored_items"] == scored


def test_scored_items_below_one_is_a_parameter_error():
    from gatekeeper.gating.registry import get_gate

    with pytest.raises(Exception, match="scored_items must be >= 1"):
        get_gate("adapter_effect").build({"scored_items": 0})
