"""merge_equivalence on tiny models: a faithful merge passes; a scaling saved wrong or a merge into the wrong base fails."""

import json

import pytest

from gatekeeper._util.hashing import sha256_file
from gatekeeper.cli import main
from tests.conftest import edit_manifest

PROMPTS = 6
pytestmark = pytest.mark.usefixtures("one_thread")


def _gate(data, **params):
    data["gates"] = [{"name": "merge_equivalence", "params": {"max_prompts": PROMPTS, **params}}]


def _result(out):
    return json.loads((out / "verdict.json").read_text())["gates"][0]


def _metric(result, name):
    return next(m for m in result["metrics"] if m["name"] == name)


def test_a_lora_candidate_merges_equivalently(bundle_copy, tmp_path):
    edit_manifest(bundle_copy, _gate)
    assert main(["check", str(bundle_copy), "--out", str(tmp_path), "-q"]) == 0
    result = _result(tmp_path)
    assert result["status"] == "passed"
    assert _metric(result, "greedy_identical_share")["adapter"] == 1.0
    logits = _metric(result, "max_rel_logit_diff")
    assert logits["threshold"] == 1e-4 and 0 < logits["adapter"] <= 1e-4  # rounding differs, and only rounding
    assert _metric(result, "top1_agreement")["adapter"] == 1.0
    assert result["details"]["positions_compared"] >= PROMPTS
    assert result["details"]["tolerance"]["source"] == "float32 defaults"
    assert "recipe" in result["details"]["scaling"]
    html = (tmp_path / "report.html").read_text()
    assert 'id="gate-merge_equivalence"' in html and "greedy_identical_share" in html


def test_a_scaling_saved_unlike_training_fails(bundle_copy, tmp_path):
    """Merged and unmerged both read adapter_config.json, so they agree; the recipe says what was trained."""
    adapter = bundle_copy / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["lora_alpha"] = config["lora_alpha"] * 2
    (adapter / "adapter_config.json").write_text(json.dumps(config))

    def rehash(data):  # consistently hashed and signed again: only the scaling is at fault
        _gate(data)
        data["adapter"]["files"] = {p.name: sha256_file(p) for p in sorted(adapter.iterdir())}

    edit_manifest(bundle_copy, rehash)
    assert main(["check", str(bundle_copy), "--out", str(tmp_path), "-q"]) == 1
    result = _result(tmp_path)
    assert result["status"] == "failed"
    assert _metric(result, "scaling_mismatches")["adapter"] == 1
    assert "adapter_config.json" in result["summary"] and "lora_alpha 16" in result["summary"]
    assert result["details"]["scaling_problems"][0].startswith("adapter_config.json: lora_alpha 16, r 4")
    assert _metric(result, "greedy_identical_share")["adapter"] == 1.0  # behaviour alone could not tell


def _export_merged(bundle, base_dir, target):
    """A merged model as an export pipeline writes one: the bundle's adapter folded into ``base_dir``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), bundle / "adapter").merge_and_unload()
    merged.save_pretrained(target, safe_serialization=True)
    return target


def test_the_merged_model_is_saved_with_its_hashes_and_judged_again(bundle_copy, tmp_path):
    from gatekeeper._util.hashing import sha256_file

    edit_manifest(bundle_copy, lambda d: _gate(d, save_merged=True))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "saved"), "-q"]) == 0
    saved = _result(tmp_path / "saved")["details"]["saved"]
    merged = tmp_path / "saved" / "merged-model"
    assert saved["path"] == str(merged.resolve()) and "model.safetensors" in saved["sha256"]
    assert saved["sha256"] == {name: sha256_file(merged / name) for name in saved["sha256"]}
    assert not [p for p in merged.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
    assert (merged / "SHA256SUMS").read_text().count("\n") == len(saved["sha256"])
    # the written model, judged as an export from elsewhere, is the same model
    edit_manifest(bundle_copy, lambda d: _gate(d, merged_model=str(merged)))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "again"), "-q"]) == 0
    assert _metric(_result(tmp_path / "again"), "max_abs_logit_diff")["adapter"] <= 1e-4


def test_a_merge_into_the_wrong_base_fails(bundle_copy, tiny_base, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(1)  # same architecture and tokenizer, other weights: a sibling checkpoint
    other = tmp_path / "other-base"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_base)).save_pretrained(other, safe_serialization=True)
    wrong = _export_merged(bundle_copy, other, tmp_path / "merged-wrong")

    edit_manifest(bundle_copy, lambda d: _gate(d, merged_model=str(wrong)))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "wrong"), "-q"]) == 1
    result = _result(tmp_path / "wrong")
    assert result["status"] == "failed" and "greedy outputs differ" in result["summary"]
    assert _metric(result, "max_abs_logit_diff")["adapter"] > 1e-2
    assert result["evidence"] and result["evidence"][0]["base_output"] != result["evidence"][0]["adapter_output"]


def test_a_missing_merged_model_is_bad_input(bundle_copy, tmp_path, capsys):
    edit_manifest(bundle_copy, lambda d: _gate(d, merged_model=str(tmp_path / "nowhere")))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a directory" in err[0]
    assert not (tmp_path / "r").exists()


@pytest.fixture
def qlora_bundle(tmp_path, tiny_base, tiny_task):
    """A QLoRA candidate: LoRA trained over the tiny base frozen in 4-bit NF4, served the same way."""
    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.training.loop import train
    from gatekeeper.training.versions import write_candidate
    from tests.conftest import write_recipe

    recipe, root = load_recipe(write_recipe(tmp_path / "qlora", tiny_base, tiny_task, method="qlora",
                                            training={"max_steps": 2, "eval_every": 2, "learning_rate": 0.05}))
    bundle = write_candidate(train(recipe, root), recipe, root)
    edit_manifest(bundle, _gate)
    return bundle


def test_a_qlora_candidate_reports_the_drift_of_its_merge(qlora_bundle, tmp_path):
    assert main(["check", str(qlora_bundle), "--out", str(tmp_path), "-q"]) == 0
    result = _result(tmp_path)
    assert result["details"]["tolerance"]["source"] == "nf4 defaults"
    assert "de-quantised" in result["details"]["merged"]
    # merging into the de-quantised base moves the distributions a little, within the 4-bit tolerance
    drift = _metric(result, "max_prob_diff")["adapter"]
    assert 0 < drift <= 1e-2 and _metric(result, "max_rel_logit_diff")["threshold"] is None
    # re-quantising the merge rounds the update again: reported, larger than the de-quantised merge's drift
    assert _metric(result, "requantized_max_prob_diff")["adapter"] > drift
    assert 0 <= _metric(result, "requantized_greedy_identical_share")["adapter"] <= 1
    assert "re-quantising the merge to nf4 changes" in result["details"]["requantized"]


def test_on_a_fake_runtime_only_the_merged_side_is_asked_and_a_drift_fails(tmp_path):
    from gatekeeper.gating.engine import run_gates
    from gatekeeper.runtime.cache import CachedRuntime, ResponseCache
    from gatekeeper.testing import FakeRuntime
    from tests.fakes import ITEMS, build, chatty, make_bundle, perfect

    gates = build(("merge_equivalence", {"max_prompts": 10, "check_scaling": False}, True))
    faithful = FakeRuntime({"adapter": perfect, "merged": perfect})
    assert run_gates(make_bundle(ITEMS), gates, faithful)[0].status == "passed"
    assert faithful.calls == [("merged", 10)]

    drifted = FakeRuntime({"adapter": perfect, "merged": lambda t: chatty(t) if t.endswith("7") else perfect(t)})
    cached = CachedRuntime(drifted, ResponseCache(tmp_path / "c.sqlite"))
    first = run_gates(make_bundle(ITEMS), gates, cached)[0]
    assert first.status == "failed" and "1 of 10 greedy outputs differ" in first.summary
    assert first.evidence[0].base_output.startswith("The priority is")  # the merged model's answer, shown first
    again = run_gates(make_bundle(ITEMS), gates, cached)[0]  # answered from the cache, same result
    assert again == first and cached.hits == 10 and drifted.calls == [("merged", 10)]


def test_tolerances_follow_the_dtype_the_check_ran_in(bundle_copy, tmp_path):
    """Through the response cache too: a bundle served in bfloat16 is judged by bfloat16 tolerances."""
    def bf16(data):
        _gate(data)
        data["serving"]["dtype"] = "bfloat16"

    edit_manifest(bundle_copy, bf16)
    main(["check", str(bundle_copy), "--out", str(tmp_path), "-q"])
    result = _result(tmp_path)
    assert result["details"]["tolerance"]["source"] == "bfloat16 defaults"
    assert _metric(result, "max_rel_logit_diff")["threshold"] == 5e-2
