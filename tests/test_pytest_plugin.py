"""The pytest plugin, run with pytester: one test per gate, fixtures, assert_gate, bad bundles."""

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points

import pytest

import gatekeeper.check
from tests.conftest import edit_manifest


def gate_run(pytester, bundle, *args):
    return pytester.runpytest("--gatekeeper-bundle", str(bundle), "-p", "no:cacheprovider", *args)


def test_each_gate_is_one_test_and_a_passing_bundle_passes(pytester, tiny_bundle):
    result = gate_run(pytester, tiny_bundle, "-v")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*bundle.yaml::json_parse PASSED*", "*bundle.yaml::task_accuracy PASSED*"])
    result.stdout.fnmatch_lines(["tiny v1: PASS (gatekeeper exit code 0)", "report: *report.html"])
    assert (pytester.path / "reports" / "tiny" / "v1" / "report.html").is_file()


def test_a_failing_gate_fails_its_test_with_rule_values_and_examples(pytester, bundle_copy):
    edit_manifest(bundle_copy, lambda d: d["gates"][0]["params"].update(min_rate=1.0))
    shutil.copytree(bundle_copy, pytester.path / "adapters" / "tiny" / "v1")  # where a project keeps it
    result = gate_run(pytester, "adapters/tiny/v1", "-v", "--junitxml", "ci.xml")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "adapters/tiny/v1/bundle.yaml::json_parse FAILED*",
        "adapters/tiny/v1/bundle.yaml::task_accuracy PASSED*",
        "gate 'json_parse' failed",
        "  rule: adapter parse+valid rate >= 1.00",
        "  valid_rate: base 0.000, adapter 0.000, delta +0.000 (threshold 1.000)",
        "  worst examples:",
        "    eval-0000: 'ticket 200: *' expected {\"priority\": \"critical\", *}",
        "      adapter: *",
        "  report: *report.html",
        "tiny v1: FAIL (gatekeeper exit code 1)",
    ])
    assert "Traceback" not in result.stdout.str() and "def runtest" not in result.stdout.str()
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "ci.xml").getroot().iter("testcase")}
    assert set(cases) == {"json_parse", "task_accuracy"}
    assert cases["json_parse"].find("failure").get("message").startswith("gate 'json_parse' failed")
    assert cases["task_accuracy"].find("failure") is None


def test_fixtures_serve_your_own_assertions_and_the_gates_run_once(pytester, tiny_bundle, monkeypatch):
    checks = []
    real = gatekeeper.check.run_check
    monkeypatch.setattr(gatekeeper.check, "run_check", lambda *a, **k: checks.append(1) or real(*a, **k))
    pytester.makepyfile(test_release="""
        from gatekeeper.verdict.assertions import assert_gate

        def test_bundle(gatekeeper_bundle):
            assert gatekeeper_bundle.manifest.name == "tiny"

        def test_delta(gatekeeper_verdict):
            assert gatekeeper_verdict.gate("task_accuracy").delta >= -1.0

        def test_reports(gatekeeper_reports):
            assert gatekeeper_reports["verdict.json"].is_file()

        def test_a_stricter_rule_than_the_bundle(gatekeeper_verdict):
            assert_gate(gatekeeper_verdict, "task_accuracy", min_delta=0.5)
    """)
    result = gate_run(pytester, tiny_bundle)
    result.assert_outcomes(passed=5, failed=1)
    assert checks == [1]  # two gate items and four tests share one check
    result.stdout.fnmatch_lines([
        "*gate 'task_accuracy': accuracy delta +0.000 is below min_delta=0.5",
        "*  rule: adapter - base accuracy >= -100 points",
        "*  accuracy: base 0.000, adapter 0.000, delta +0.000 (threshold -1.000)",
    ])


def test_an_advisory_gate_that_fails_is_skipped_not_failed(pytester, bundle_copy):
    edit_manifest(bundle_copy, lambda d: d["gates"][0].update(required=False, params={"min_rate": 1.0}))
    result = gate_run(pytester, bundle_copy, "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*advisory gate failed: 0.0% of adapter outputs are valid JSON*"])


def test_reports_go_where_asked(pytester, tiny_bundle):
    gate_run(pytester, tiny_bundle, "--gatekeeper-report-dir", "out").assert_outcomes(passed=2)
    assert sorted(p.name for p in (pytester.path / "out").iterdir()) == ["junit.xml", "report.html", "verdict.json"]
    assert not (pytester.path / "reports").exists()


def test_a_bundle_that_does_not_load_is_one_collection_error(pytester, bundle_copy):
    (bundle_copy / "signature.json").unlink()
    result = gate_run(pytester, bundle_copy)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["gatekeeper: *bundle is not signed*(pass --gatekeeper-allow-unsigned to check it anyway)"])
    assert "Traceback" not in result.stdout.str()
    gate_run(pytester, bundle_copy, "--gatekeeper-allow-unsigned").assert_outcomes(passed=2)


def test_a_path_that_holds_no_bundle_is_a_usage_error(pytester):
    result = pytester.runpytest("--gatekeeper-bundle", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: gatekeeper: *nowhere: not a bundle directory (no bundle.yaml)"])


def test_without_a_bundle_the_plugin_stays_out_of_the_way(pytester):
    pytester.makepyfile(test_plain="""
        def test_one():
            assert True

        def test_wants_a_verdict(gatekeeper_verdict):
            pass
    """)
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no --gatekeeper-bundle given*"])


def test_the_plugin_is_registered_and_imports_without_torch():
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins["gatekeeper"] == "gatekeeper.pytest_plugin"
    probe = "import sys, gatekeeper.pytest_plugin; print([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"


def test_a_check_that_crashes_fails_every_gate_once_with_one_line(pytester, tiny_bundle, monkeypatch):
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(gatekeeper.check, "run_check", crash)
    result = gate_run(pytester, tiny_bundle)
    result.assert_outcomes(failed=2)
    assert calls == [1]
    line = "gatekeeper: internal error: RuntimeError: out of memory"
    result.stdout.fnmatch_lines(["*_ gate json_parse of tiny v1 _*", line, "*_ gate task_accuracy of tiny v1 _*", line])


def test_the_fixtures_work_when_the_bundle_itself_is_not_collected(pytester, tiny_bundle, monkeypatch):
    """--lf collects only files that failed last time: here the user's test, not bundle.yaml."""
    pytester.makepyfile(test_release="""
        import os

        def test_name(gatekeeper_bundle, gatekeeper_verdict):
            assert gatekeeper_bundle.manifest.name == gatekeeper_verdict.bundle.name == "tiny"
            assert os.environ.get("SECOND_RUN")
    """)
    args = ("--gatekeeper-bundle", str(tiny_bundle / "bundle.yaml"))  # the manifest names the bundle too
    pytester.runpytest(*args).assert_outcomes(passed=2, failed=1)
    monkeypatch.setenv("SECOND_RUN", "1")  # the in-process run sees this process's environment
    rerun = pytester.runpytest(*args, "--lf", "-v")
    rerun.assert_outcomes(passed=1)
    assert "bundle.yaml::json_parse" not in rerun.stdout.str()
