import subprocess
import sys

import pytest

from gatekeeper.errors import GateParameterError, UnknownGateError
from gatekeeper.gating.registry import available_gates, gate, get_gate


def test_builtin_gates_come_from_entry_points():
    names = {info.name for info in available_gates()}
    assert {"json_parse", "task_accuracy"} <= names
    assert get_gate("json_parse").source == "gatekeeper.builtin_gates.json_parse"


def test_unknown_gate_suggests_the_closest_names():
    with pytest.raises(UnknownGateError) as info:
        get_gate("json_prase")
    message = str(info.value)
    assert "Did you mean 'json_parse'" in message
    assert "Available:" in message and "task_accuracy" in message


def test_parameters_are_checked_against_the_signature():
    info = get_gate("task_accuracy")
    built = info.build({"min_delta": 0.2})
    assert built.min_delta == 0.2
    with pytest.raises(GateParameterError, match=r"parameter 'min_delta'.*got 'lots'"):
        info.build({"min_delta": "lots"})
    with pytest.raises(GateParameterError, match=r"no parameter 'min_detla'"):
        info.build({"min_detla": 0.1})


def test_a_value_the_gate_refuses_is_a_parameter_error():
    """A ValueError from the gate's own checks is bad input (exit 2), not a crash."""
    with pytest.raises(GateParameterError, match=r"gate 'json_parse': min_rate must be within \[0, 1\], got 1.5"):
        get_gate("json_parse").build({"min_rate": 1.5})


def test_duplicate_gate_names_are_refused():
    @gate("test_dup_gate")
    class First:
        def requests(self, ctx):
            return []

        def evaluate(self, ctx, responses):
            return None

    with pytest.raises(ValueError, match="already registered"):
        @gate("test_dup_gate")
        class Second(First):
            pass


def test_a_gate_must_define_requests_and_evaluate():
    with pytest.raises(TypeError, match="evaluate"):
        @gate("test_incomplete_gate")
        class Incomplete:
            def requests(self, ctx):
                return []


def test_listing_gates_does_not_import_torch():
    code = (
        "import sys; from gatekeeper.cli import main; rc = main(['gates', 'list']);"
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "json_parse" in done.stdout and "task_accuracy" in done.stdout


def test_one_gate_runs_twice_under_its_own_ids(bundle_copy, tmp_path, capsys):
    """A second instance needs an id; each reports under it, with its own parameters and verdict."""
    import json

    from gatekeeper.cli import main
    from tests.conftest import edit_manifest

    twice = [{"name": "task_accuracy", "params": {"min_delta": -1.0, "require_significant": False}},
             {"name": "task_accuracy", "params": {"min_delta": 1.0}}]
    edit_manifest(bundle_copy, lambda d: d.update(gates=twice))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "gate 'task_accuracy' is listed twice; give the second one an id to run it twice" in err

    twice[1]["id"] = "task_accuracy_strict"
    edit_manifest(bundle_copy, lambda d: d.update(gates=twice))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "r"), "-q"]) == 1
    gates = json.loads((tmp_path / "r" / "verdict.json").read_text())["gates"]
    assert [(g["name"], g["status"]) for g in gates] == [("task_accuracy", "passed"), ("task_accuracy_strict", "failed")]
    assert gates[0]["metrics"][0]["adapter"] == gates[1]["metrics"][0]["adapter"]  # the same answers, judged twice
    assert 'name="task_accuracy_strict"' in (tmp_path / "r" / "junit.xml").read_text()
