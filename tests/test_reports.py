"""Reports: deterministic apart from the timing section, JUnit per gate, exit codes."""

import json
import re
import xml.etree.ElementTree as ET

from gatekeeper.cli import main
from tests.conftest import edit_manifest


def _check(bundle, out, *extra):
    return main(["check", str(bundle), "--out", str(out), "-q", *extra])


def _without_timing(out):
    verdict = json.loads((out / "verdict.json").read_text())
    verdict.pop("timing")
    junit = re.sub(r"<system-out>timing:.*</system-out>", "", (out / "junit.xml").read_text())
    html = (out / "report.html").read_text().split("<!-- timing")[0]
    return verdict, junit, html


def test_two_checks_give_identical_reports_apart_from_timing(tiny_bundle, tmp_path):
    assert _check(tiny_bundle, tmp_path / "a") == 0
    assert _check(tiny_bundle, tmp_path / "b") == 0  # from the cache
    assert _check(tiny_bundle, tmp_path / "c", "--no-cache") == 0  # from the model again
    a, b, c = (_without_timing(tmp_path / x) for x in "abc")
    assert a == b == c
    timing_b = json.loads((tmp_path / "b" / "verdict.json").read_text())["timing"]
    assert timing_b["cache_misses"] == 0 and timing_b["cache_hits"] > 0


def test_report_shows_both_sides_and_the_evidence(tiny_bundle, tmp_path):
    _check(tiny_bundle, tmp_path)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    html = (tmp_path / "report.html").read_text()
    accuracy = next(g for g in verdict["gates"] if g["name"] == "task_accuracy")
    metric = accuracy["metrics"][0]
    assert f'<td class="num">{metric["base"]:.3f}</td><td class="num">{metric["adapter"]:.3f}</td>' in html
    assert "Worst examples" in html and accuracy["evidence"][0]["id"] in html
    assert "Validation loss by step" in html and "<svg" in html
    assert "<script" not in html and "http" not in html.split("</style>")[1]  # self-contained


def test_a_failing_gate_exits_1_and_is_a_junit_failure(bundle_copy, tmp_path):
    # the tiny adapter cannot emit perfect JSON
    edit_manifest(bundle_copy, lambda d: d["gates"][0]["params"].update(min_rate=1.0))
    assert _check(bundle_copy, tmp_path) == 1
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"json_parse", "task_accuracy"}
    assert cases["json_parse"].find("failure") is not None
    assert cases["task_accuracy"].find("failure") is None
    assert suite.get("failures") == "1"


def test_an_advisory_failure_still_exits_0(bundle_copy, tmp_path):
    edit_manifest(bundle_copy, lambda d: d["gates"][0].update(required=False, params={"min_rate": 1.0}))
    assert _check(bundle_copy, tmp_path) == 0
    case = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase[@name='json_parse']")
    assert case.find("skipped").get("message").startswith("advisory gate failed")
