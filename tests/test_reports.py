"""Reports: deterministic apart from the timing section, JUnit per gate, exit codes."""

import json
import re
import xml.etree.ElementTree as ET

from gatekeeper.cli import main
from gatekeeper.report.render import render_html
from tests.conftest import edit_manifest
from tests.fakes import ITEMS, fake_verdict, perfect, right_on


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
    assert "Validation loss by step" in html and '<svg class="curve"' in html
    assert "<tr><th>adapter.r</th><td><code>4</code></td></tr>" in html  # how the candidate was made
    assert 'http-equiv="Content-Security-Policy" content="default-src \'none\'' in html
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


def test_raw_outputs_are_escaped_and_each_example_stays_on_one_line():
    verdict = fake_verdict(adapter=lambda text: '<script>alert(1)</script>\n{"priority":')
    html = render_html(verdict)
    rows = [line for line in html.splitlines() if line.startswith('<tr><td class="id">')]
    assert len(rows) == sum(len(g.evidence) for g in verdict.gates) > 0
    # the line break is shown (marked) but written as a character reference, so the row stays one line
    assert all('&lt;script&gt;alert(1)&lt;/script&gt;<span class="nl">↵</span>&#10;{"priority":' in r for r in rows)
    assert "<script" not in html


def test_flipped_items_are_listed_one_per_line_and_every_item_is_drawn():
    base_right = {i["input"] for i in ITEMS[:40]}
    adapter_right = {i["input"] for i in ITEMS[20:60]}
    html = render_html(fake_verdict(adapter=right_on(adapter_right), base=right_on(base_right)))
    lines = html.splitlines()
    for item in ITEMS[:20] + ITEMS[40:60]:  # regressed, then fixed
        assert f"<li><code>{item['id']}</code></li>" in lines
    strip = next(line for line in lines if line.startswith('<svg class="strip"'))
    for k, item in enumerate(ITEMS):
        assert f"<title>{item['id']}: base {'right' if k < 40 else 'wrong'}</title>" in strip
        assert f"<title>{item['id']}: adapter {'right' if 20 <= k < 60 else 'wrong'}</title>" in strip


def test_report_is_the_same_for_the_same_verdict_and_names_no_date():
    verdict = fake_verdict(adapter=perfect)
    html = render_html(verdict)
    assert html == render_html(fake_verdict(adapter=perfect))
    assert not re.search(r"\d{4}-\d{2}-\d{2}|[0-9a-f]{8}-[0-9a-f]{4}-", html.split("<!-- timing")[0])


def test_a_long_training_curve_is_thinned_but_keeps_its_ends():
    from gatekeeper.gating.evidence import CURVE_POINTS, thin_curve

    curve = [[step, 1 / step] for step in range(1, 251)]
    thinned = thin_curve(curve)
    assert len(thinned) <= CURVE_POINTS + 1
    assert thinned[0] == curve[0] and thinned[-1] == curve[-1]
    assert thin_curve(curve[:10]) == curve[:10]


def test_the_outcome_strip_keeps_a_set_on_one_band_until_cells_would_get_too_small():
    from gatekeeper.report.plots import outcome_strip

    for n, bands in ((80, 1), (220, 1), (1000, 5)):
        ids = [f"item-{k}" for k in range(n)]
        svg = outcome_strip(ids, [True] * n, [k % 2 == 0 for k in range(n)])
        assert svg.count(">base</text>") == svg.count(">adapter</text>") == bands
        assert svg.count("<rect") == 2 * n and svg.count('class="bad"') == n // 2
