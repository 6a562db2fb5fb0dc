"""template_drift: the template and stop tokens served must be the ones trained with."""

import json
import shutil

from gatekeeper.cli import main
from tests.conftest import edit_manifest


def _with_gate(bundle, base_dir=None):
    def change(data):
        data["gates"] = [{"name": "template_drift"}]
        if base_dir is not None:
            data["base"]["ref"] = str(base_dir)
    edit_manifest(bundle, change)


def _gate(out):
    return json.loads((out / "verdict.json").read_text())["gates"][0]


def test_same_template_passes(bundle_copy, tmp_path):
    _with_gate(bundle_copy)
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"]) == 0
    assert _gate(tmp_path / "r")["summary"] == "identical"


def test_a_changed_chat_template_fails_with_a_diff(bundle_copy, tiny_base, tmp_path):
    served = tmp_path / "served-base"
    shutil.copytree(tiny_base, served)
    template = served / "chat_template.jinja"
    template.write_text(template.read_text().replace("<|im_start|>assistant", "<|im_start|>bot"))
    _with_gate(bundle_copy, served)
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"]) == 1
    result = _gate(tmp_path / "r")
    assert result["status"] == "failed" and "chat_template" in result["summary"]
    assert "+" in result["details"]["chat_template_diff"] and "bot" in result["details"]["chat_template_diff"]


def test_a_changed_stop_token_fails(bundle_copy, tiny_base, tmp_path):
    served = tmp_path / "served-base"
    shutil.copytree(tiny_base, served)
    config_path = served / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token"] = "<|endoftext|>"
    config_path.write_text(json.dumps(config))
    _with_gate(bundle_copy, served)
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"]) == 1
    differences = _gate(tmp_path / "r")["details"]["differences"]
    assert differences["eos_token"] == {"trained": "<|im_end|>", "served": "<|endoftext|>"}
    assert "stop_token_ids" in differences


def test_without_the_gate_a_drifted_template_is_refused_outright(bundle_copy, tiny_base, tmp_path, capsys):
    served = tmp_path / "served-base"
    shutil.copytree(tiny_base, served)
    template = served / "chat_template.jinja"
    template.write_text(template.read_text() + " ")
    edit_manifest(bundle_copy, lambda d: d["base"].update(ref=str(served)))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"]) == 2
    assert "chat template of base" in capsys.readouterr().err
