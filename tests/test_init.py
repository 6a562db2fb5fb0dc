"""`gatekeeper init`: an adapter trained elsewhere with plain peft becomes a bundle `gatekeeper check` judges.

The adapters here are trained (or just initialised) with peft directly, never with
gatekeeper's trainer, on the tiny model from conftest; the whole file takes seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from gatekeeper.cli import main
from tests.conftest import PROMPT_USER, edit_manifest, tiny_items, write_jsonl

TASK_GATES = [{"name": "json_parse", "params": {"min_rate": 0.0}},
              {"name": "task_accuracy", "params": {"min_delta": -1.0, "require_significant": False}}]


def _with_lora(model, **settings):
    from peft import LoraConfig, get_peft_model

    settings = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]} | settings
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **settings))


def _train_with_peft(base_dir: Path, task_dir: Path, out: Path, steps: int = 8) -> Path:
    """A LoRA adapter as a notebook would train one: peft, AdamW, causal-LM loss on chat-rendered examples."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = _with_lora(AutoModelForCausalLM.from_pretrained(base_dir))
    rows = [json.loads(line) for line in (task_dir / "train.jsonl").read_text().splitlines()]
    texts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT_USER.replace("{input}", r["input"])},
         {"role": "assistant", "content": json.dumps(r["expected"])}], tokenize=False) for r in rows]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(steps):
        batch = tokenizer([texts[(step * 8 + k) % len(texts)] for k in range(8)], return_tensors="pt",
                          padding=True, add_special_tokens=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory, tiny_base, tiny_task, one_thread) -> Path:
    return _train_with_peft(tiny_base, tiny_task, tmp_path_factory.mktemp("peft") / "adapter")


@pytest.fixture
def adapter_copy(peft_adapter, tmp_path) -> Path:
    """A private copy a test may damage."""
    return Path(shutil.copytree(peft_adapter, tmp_path / "adapter"))


def init_args(adapter: Path, base: Path, task: Path, out: Path | None, *extra: str, train: bool = True) -> list[str]:
    args = ["init", str(adapter), "--base", str(base), "--eval", str(task / "eval.jsonl"),
            "--contract", str(task / "contract.schema.json"), "--user", PROMPT_USER, "--name", "tiny-adopted", *extra]
    if out is not None:
        args += ["--out", str(out)]
    if train:
        args += ["--train", str(task / "train.jsonl"), "--validation", str(task / "validation.jsonl")]
    return args


def read_verdict(report_dir: Path) -> dict:
    return json.loads((report_dir / "verdict.json").read_text())


def test_a_plain_peft_adapter_is_taken_in_and_judged(peft_adapter, tiny_base, tiny_task, tmp_path, capsys):
    bundle = tmp_path / "adapters" / "tiny-adopted" / "v1"
    assert main(init_args(peft_adapter, tiny_base, tiny_task, bundle)) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(bundle)
    assert "gatekeeper sign" in captured.err and "bundle.yaml" in captured.err
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert "recipe" not in manifest and "training" not in manifest
    assert [g["name"] for g in manifest["gates"]] == [
        "json_parse", "task_accuracy", "adapter_effect", "contamination", "dataset_audit", "template_drift"]
    assert sorted(manifest["golden_sets"]) == ["eval", "train", "validation"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(manifest["adapter"]["files"])
    source = json.loads((bundle / "adapter_source.json").read_text())
    assert source["source"] == str(peft_adapter.resolve()) and source["peft_type"] == "LORA"
    assert (source["r"], source["lora_alpha"], source["use_rslora"], source["use_dora"]) == (4, 8, False, False)
    assert sorted(source["target_modules"]) == ["q_proj", "v_proj"] and source["layers"] == 4
    assert source["files"] == manifest["adapter"]["files"] and source["warnings"] == []

    assert main(["verify", str(bundle)]) == 0
    code = main(["check", str(bundle), "--out", str(tmp_path / "report"), "-q", "--device", "cpu"])
    assert code in (0, 1), capsys.readouterr().err
    gates = {g["name"]: g for g in read_verdict(tmp_path / "report")["gates"]}
    assert set(gates) == {g["name"] for g in manifest["gates"]}
    assert all(g["status"] in ("passed", "failed") for g in gates.values()), {n: g["status"] for n, g in gates.items()}
    assert gates["template_drift"]["status"] == "passed"  # the serving profile init wrote is the one served
    for name in ("json_parse", "task_accuracy"):
        head = gates[name]["metrics"][0]
        assert head["base"] is not None and head["adapter"] is not None and head["delta"] is not None


def _same_settings_as(reference: dict):
    def change(data):
        data["gates"] = TASK_GATES
        data["decoding"], data["serving"] = reference["decoding"], reference["serving"]
    return change


def test_init_of_a_gatekeeper_trained_adapter_gives_the_same_figures(bundle_copy, tiny_base, tiny_task, tmp_path):
    """Parity: the adapter out of a bundle gatekeeper trained, taken in by init, scores exactly as the original."""
    adapter = Path(shutil.copytree(bundle_copy / "adapter", tmp_path / "their-adapter"))
    adopted = tmp_path / "adopted" / "tiny-adopted" / "v1"
    assert main(init_args(adapter, tiny_base, tiny_task, adopted)) == 0
    edit_manifest(bundle_copy, lambda d: d.update(gates=TASK_GATES))
    trained = yaml.safe_load((bundle_copy / "bundle.yaml").read_text())
    edit_manifest(adopted, _same_settings_as(trained))
    assert yaml.safe_load((adopted / "bundle.yaml").read_text())["adapter"]["files"] == trained["adapter"]["files"]

    figures = []
    for bundle, out in ((bundle_copy, tmp_path / "r-trained"), (adopted, tmp_path / "r-adopted")):
        assert main(["check", str(bundle), "--out", str(out), "-q", "--no-cache"]) == 0  # no cache: both run the model
        figures.append({g["name"]: (g["status"], [(m["name"], m["base"], m["adapter"], m["delta"]) for m in g["metrics"]])
                        for g in read_verdict(out)["gates"]})
    assert figures[0] == figures[1]
    assert set(figures[0]) == {"json_parse", "task_accuracy"} and all(m for _, m in figures[0].values())


# -- refusals: exit 2, one line naming the problem, nothing written ----------------------------------

def _rewrite_tensors(adapter: Path, rename) -> None:
    from safetensors.torch import (  # safetensors only: nothing here unpickles
        load_file,
        save_file,
    )

    path = adapter / "adapter_model.safetensors"
    tensors = load_file(path)
    save_file({rename(k): v.contiguous() for k, v in tensors.items()}, path)


def _edit_config(adapter: Path, **fields) -> None:
    path = adapter / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


def _target_the_base_lacks(adapter: Path) -> None:
    _edit_config(adapter, target_modules=["foo_proj", "v_proj"])
    _rewrite_tensors(adapter, lambda k: k.replace("q_proj", "foo_proj"))


def _truncate(adapter: Path) -> None:
    path = adapter / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _break_the_contract(adapter: Path) -> None:
    items = tiny_items("eval", 4, offset=200)
    items[2]["expected"]["priority"] = "urgent"  # not one of the contract's labels
    write_jsonl(adapter.parent / "task" / "eval.jsonl", items)


REFUSALS = {
    "missing config": (lambda a: (a / "adapter_config.json").unlink(), "adapter_config.json: not found"),
    "config not JSON": (lambda a: (a / "adapter_config.json").write_text("{r: 4"), "adapter config is not valid JSON"),
    "pickled weights": (lambda a: (a / "adapter_model.bin").write_bytes(b"\x80\x04."), "pickled files (adapter_model.bin)"),
    "not LoRA": (lambda a: _edit_config(a, peft_type="LOHA"), "peft_type is 'LOHA'"),
    "target module the base lacks": (_target_the_base_lacks, "target module 'foo_proj' is not in base"),
    "untargeted tensor": (lambda a: _edit_config(a, target_modules=["v_proj"]),
                          "model.layers.0.self_attn.q_proj, which adapter_config.json target_modules"),
    "rank mismatch": (lambda a: _edit_config(a, r=8), "has rank 4, but adapter_config.json says r = 8"),
    "corrupt header": (_truncate, "adapter weights file is not a valid safetensors file"),
    "golden item breaks the contract": (_break_the_contract, "eval.jsonl:3: expected answer breaks the contract"),
    "output exists": (lambda a: (a.parent / "adapters" / "tiny-adopted" / "v1").mkdir(parents=True), "already exists"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_input_is_refused_with_one_line_and_nothing_written(case, adapter_copy, tiny_base, tiny_task, tmp_path, capsys):
    task = Path(shutil.copytree(tiny_task, tmp_path / "task"))
    damage, expected = REFUSALS[case]
    damage(adapter_copy)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "adapters" / "tiny-adopted" / "v1"
    code = main(init_args(adapter_copy, tiny_base, task, out))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("gatekeeper: error: ") and expected in err[0], err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # not even a staging directory


def test_an_adapter_for_another_hidden_size_does_not_fit(tiny_base, tiny_task, tmp_path, capsys):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_base)
    config.hidden_size, config.intermediate_size = 96, 160
    torch.manual_seed(0)
    out = tmp_path / "wide-adapter"
    _with_lora(AutoModelForCausalLM.from_config(config)).save_pretrained(out, safe_serialization=True)
    assert main(init_args(out, tiny_base, tiny_task, tmp_path / "adapters" / "x" / "v1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.layers.0.self_attn.q_proj.lora_A.weight is [4, 96], which does not fit" in err[0], err
    assert "needs [4, 64]" in err[0] and not (tmp_path / "adapters").exists()


def test_a_different_base_name_warns_and_is_recorded(adapter_copy, tiny_base, tiny_task, tmp_path, capsys):
    _edit_config(adapter_copy, base_model_name_or_path="SomeOrg/another-model")
    bundle = tmp_path / "adapters" / "tiny-adopted" / "v3"
    assert main(init_args(adapter_copy, tiny_base, tiny_task, bundle, train=False)) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if line.startswith("gatekeeper: warning: ")]
    assert len(warned) == 1 and "'SomeOrg/another-model'" in warned[0] and str(tiny_base) in warned[0]
    assert captured.out.strip() == str(bundle)
    source = json.loads((bundle / "adapter_source.json").read_text())
    assert source["base_model_name_or_path"] == "SomeOrg/another-model" and source["base"] == str(tiny_base)
    assert source["base_matches_adapter_config"] is False and source["warnings"] == [warned[0].split(": warning: ")[1]]
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    assert manifest["version"] == 3  # from the directory's name
    # no train set: no gate that reads one
    assert [g["name"] for g in manifest["gates"]] == ["json_parse", "task_accuracy", "adapter_effect", "template_drift"]


def test_the_default_output_is_the_next_free_version_and_the_bundle_loads(adapter_copy, tiny_base, tiny_task,
                                                                           tmp_path, monkeypatch, capsys):
    from gatekeeper.bundle.loading import load_bundle

    monkeypatch.chdir(tmp_path)
    args = init_args(adapter_copy, tiny_base, tiny_task, None, "--set", f"extra={tiny_task / 'eval.jsonl'}")
    assert main(args) == 0 and main(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(Path("adapters") / "tiny-adopted" / f"v{n}") for n in (1, 2)]
    loaded = load_bundle(tmp_path / printed[1])
    assert loaded.manifest.version == 2 and loaded.recipe is None and loaded.training_record is None
    assert loaded.adapter_source["layers"] == 4 and set(loaded.golden) == {"eval", "train", "validation", "extra"}
    base_ref = Path(loaded.manifest.base.ref)  # relative to the bundle, so the tree can move
    assert not base_ref.is_absolute() and (loaded.root / base_ref).resolve() == tiny_base.resolve()


def test_gates_edited_afterwards_are_signed_again_with_sign(adapter_copy, tiny_base, tiny_task, tmp_path, capsys):
    bundle = tmp_path / "adapters" / "tiny-adopted" / "v1"
    assert main(init_args(adapter_copy, tiny_base, tiny_task, bundle, train=False)) == 0
    edit_manifest(bundle, lambda d: d.update(gates=TASK_GATES), resign=False)
    capsys.readouterr()
    assert main(["verify", str(bundle)]) == 2 and "signature does not match" in capsys.readouterr().err
    assert main(["sign", str(bundle)]) == 0 and main(["verify", str(bundle)]) == 0
    (bundle / "data" / "eval.jsonl").write_text("{}\n")  # a changed file is never signed over
    capsys.readouterr()
    assert main(["sign", str(bundle)]) == 2 and "hash mismatch for data/eval.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("given, expected", [("regression", "--set expects NAME=PATH"),
                                              ("train=x.jsonl", "--set train: given twice"),
                                              ("../up=x.jsonl", "golden set name '../up'")])
def test_a_bad_set_option_is_one_line(given, expected, peft_adapter, tiny_base, tiny_task, tmp_path, capsys):
    assert main(init_args(peft_adapter, tiny_base, tiny_task, tmp_path / "v1", "--set", given)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_dora_adapter_with_a_rank_pattern_fits(tiny_base, tiny_task, tmp_path):
    """DoRA's magnitude vectors and a per-module rank are shapes init knows, not refusals."""
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "dora"
    model = _with_lora(AutoModelForCausalLM.from_pretrained(tiny_base), use_dora=True, rank_pattern={"v_proj": 2})
    model.save_pretrained(adapter, safe_serialization=True)
    bundle = tmp_path / "adapters" / "tiny-adopted" / "v1"
    assert main(init_args(adapter, tiny_base, tiny_task, bundle, train=False)) == 0
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    source = json.loads((bundle / "adapter_source.json").read_text())
    assert manifest["adapter"]["method"] == "dora" and source["use_dora"] is True
    assert source["rank_pattern"] == {"v_proj": 2} and source["layers"] == 4


def test_init_writes_the_data_declaration_given_and_refuses_a_bad_one(adapter_copy, tiny_base, tiny_task, tmp_path):
    from gatekeeper.bundle.adopt import adopt_adapter
    from gatekeeper.bundle.manifest import DataProvenance
    from gatekeeper.bundle.signing import load_verified
    from gatekeeper.errors import BundleError

    def adopt(out, **options):
        return adopt_adapter(adapter_copy, base=str(tiny_base), name="tiny-adopted", out=out,
                             golden={"eval": tiny_task / "eval.jsonl", "train": tiny_task / "train.jsonl"},
                             contract=tiny_task / "contract.schema.json", **options)

    plain = adopt(tmp_path / "plain" / "v1")
    assert yaml.safe_load((plain.path / "bundle.yaml").read_text())["provenance"] == {}  # left empty, to fill in
    declared = adopt(tmp_path / "declared" / "v1", provenance={
        "train": {"source": "notebook export", "licence": "apache-2.0", "customer_data": True},
        "eval": DataProvenance(licence="cc-by-4.0")})
    assert yaml.safe_load((declared.path / "bundle.yaml").read_text())["provenance"] == {
        "eval": {"licence": "cc-by-4.0"},
        "train": {"source": "notebook export", "licence": "apache-2.0", "customer_data": True}}
    load_verified(declared.path)  # signed with the declaration in it
    for provenance, message in (({"validation": {}}, "provenance for set 'validation': no such golden set"),
                                ({"train": {"licence": "a b"}}, "provenance for set 'train': field 'licence'"),
                                ({"train": {"owner": "x"}}, "provenance for set 'train': unknown key 'owner'")):
        with pytest.raises(BundleError, match=message):
            adopt(tmp_path / "refused" / "v1", provenance=provenance)
        assert not (tmp_path / "refused").exists()
