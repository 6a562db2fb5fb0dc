"""Bad input found by a gate is still bad input: exit 2, one line, before any model loads, nothing written."""

import time

import pytest

from gatekeeper.cli import main
from gatekeeper.runtime.hf import modeling
from tests.conftest import edit_manifest


def _check(bundle, out, capsys) -> tuple[int, list[str], float]:
    loaded = modeling.MODELS_LOADED
    started = time.perf_counter()
    code = main(["check", str(bundle), "--out", str(out), "-q"])
    took = time.perf_counter() - started
    assert modeling.MODELS_LOADED == loaded, "a model was loaded for a bundle that should have been refused"
    assert not out.exists(), "a report was written for a refused bundle"
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()], took


def test_a_golden_set_a_gate_needs_that_the_bundle_lacks_is_refused_before_any_model(bundle_copy, tmp_path, capsys):
    edit_manifest(bundle_copy, lambda d: d.update(gates=[{"name": "json_parse", "params": {"golden_set": "holdout"}}]))
    code, err, took = _check(bundle_copy, tmp_path / "r", capsys)
    assert code == 2 and len(err) == 1
    assert "'json_parse'" in err[0] and "'holdout'" in err[0] and "not in the bundle" in err[0]
    print(f"refused in {took:.2f} s")  # measured, not asserted: the machine is shared


def test_a_bundle_with_no_gates_is_refused(bundle_copy, tmp_path, capsys):
    edit_manifest(bundle_copy, lambda d: d.update(gates=[]))
    code, err, _ = _check(bundle_copy, tmp_path / "r", capsys)
    assert code == 2 and len(err) == 1 and "'gates' is empty" in err[0]


@pytest.mark.parametrize("payload", [b"\xff\xfe n\x00a\x00m\x00e\x00", "name: caf\xe9\n".encode("latin-1")])
def test_a_manifest_that_is_not_utf8_is_named_with_the_byte(bundle_copy, tmp_path, capsys, payload):
    (bundle_copy / "bundle.yaml").write_bytes(payload)
    code, err, _ = _check(bundle_copy, tmp_path / "r", capsys)
    assert code == 2 and len(err) == 1 and "bundle.yaml" in err[0] and "not UTF-8" in err[0]


def test_a_yaml_alias_bomb_is_refused_with_a_short_line(bundle_copy, tmp_path, capsys):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (bundle_copy / "bundle.yaml").write_text("\n".join(levels) + "\nname: *a8\n", encoding="utf-8")
    code, err, _ = _check(bundle_copy, tmp_path / "r", capsys)
    assert code == 2 and len(err) == 1 and "expands to more than" in err[0] and len(err[0]) < 300


def test_a_bundle_path_that_is_a_file_is_named_as_such(bundle_copy, tmp_path, capsys):
    code, err, _ = _check(bundle_copy / "training.json", tmp_path / "r", capsys)
    assert code == 2 and len(err) == 1 and "not a bundle directory" in err[0] and "training.json" in err[0]


def test_a_training_record_that_is_not_json_is_refused_while_loading(bundle_copy, tmp_path, capsys):
    (bundle_copy / "training.json").write_text("{not json", encoding="utf-8")
    edit_manifest(bundle_copy, lambda d: d["training"].update(sha256=__import__("gatekeeper._util.hashing", fromlist=["x"])
                                                              .sha256_file(bundle_copy / "training.json")))
    code, err, _ = _check(bundle_copy, tmp_path / "r", capsys)
    assert code == 2 and len(err) == 1 and "training.json" in err[0] and "not valid JSON" in err[0]
