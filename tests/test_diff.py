"""gatekeeper diff: metric changes, flipped items, the side-by-side HTML, and bad input."""

import difflib
import json

import pytest

from gatekeeper.cli import main
from gatekeeper.gating.stats import mcnemar_exact
from gatekeeper.report.render import write_reports
from gatekeeper.verdict.diff import diff_verdicts
from tests.fakes import ITEMS, fake_verdict, right_on

FIRST_40 = {i["input"] for i in ITEMS[:40]}
MIDDLE_45 = {i["input"] for i in ITEMS[30:75]}
IDS = [i["id"] for i in ITEMS]


@pytest.fixture
def two_reports(tmp_path, monkeypatch):
    """Report directories of two fake candidates: A right on items 0-39 (r=4), B on 30-74 (r=16)."""
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps to the terminal; keep rows whole for the asserts
    a, b = tmp_path / "a", tmp_path / "b"
    write_reports(fake_verdict(right_on(FIRST_40), version=1, rank=4), a)
    write_reports(fake_verdict(right_on(MIDDLE_45), version=2, rank=16), b)
    return a, b


def test_diff_names_the_items_each_candidate_gets_right_and_the_metric_change():
    a = fake_verdict(right_on(FIRST_40), version=1, rank=4)
    b = fake_verdict(right_on(MIDDLE_45), version=2, rank=16)
    accuracy = next(g for g in diff_verdicts(a, b).gates if g.gate == "task_accuracy")
    assert [f.item for f in accuracy.broken] == IDS[:30]  # right only in A, listed first
    assert [f.item for f in accuracy.fixed] == IDS[40:75]
    assert [f.item for f in accuracy.flips] == IDS[:30] + IDS[40:75]
    assert accuracy.compared == 80 and accuracy.p_value == round(mcnemar_exact(30, 35), 6)
    (metric,) = accuracy.metrics
    assert (metric.a, metric.b, metric.change, metric.direction) == (0.5, 0.5625, 0.0625, "better")
    rank = next(row for row in diff_verdicts(a, b).lineage if row.field == "adapter.r")
    assert (rank.a, rank.b, rank.changed) == ("4", "16", True)


def test_cli_prints_the_changes_and_writes_a_side_by_side_html(two_reports, tmp_path, capsys):
    a, b = two_reports
    html = tmp_path / "out" / "diff.html"
    assert main(["diff", str(a), str(b / "verdict.json"), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "what changed, B against A" in out
    assert any(all(cell in line for cell in ("accuracy", "0.500", "0.562", "+0.062")) for line in out.splitlines())
    assert "task_accuracy: 65 of 80 items changed outcome, 35 right only in B, 30 right only in A" in out
    assert any("eval-0000" in line and "right" in line and "wrong" in line for line in out.splitlines())
    page = html.read_text()
    lines = page.splitlines()
    assert "http" not in page.split("</style>")[1] and "<script" not in page
    flips = [line for line in lines if line.startswith('<tr><td class="id"><code>eval-')]
    assert len(flips) == 2 * 65  # both gates, one row per flipped item
    # A got eval-0000 right, B answered in prose; both sides on one row
    assert any(line.startswith('<tr><td class="id"><code>eval-0000</code>') and "✓" in line
               and "The priority is critical." in line for line in flips)
    assert '<tr class="changed"><th>adapter.r</th><td><code>4</code></td><td><code>16</code></td></tr>' in lines


def test_a_gate_that_stops_passing_is_called_out(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    write_reports(fake_verdict(right_on(FIRST_40), version=1), tmp_path / "a")
    write_reports(fake_verdict(right_on({i["input"] for i in ITEMS[:10]}), version=2), tmp_path / "b")
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--html", str(tmp_path / "d.html")]) == 0
    assert "passed → failed" in capsys.readouterr().out
    assert '<td class="changed"><span class="badge failed">failed</span></td>' in (tmp_path / "d.html").read_text()


def _bad(capsys, *args):
    code = main(["diff", *map(str, args)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_exit_2(two_reports, tmp_path, capsys, monkeypatch):
    a, _ = two_reports
    monkeypatch.chdir(tmp_path)
    assert "no such file or directory" in _bad(capsys, a, tmp_path / "missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": "world"}))
    assert "not a gatekeeper verdict" in _bad(capsys, tmp_path / "other.json", a)
    (tmp_path / "broken.json").write_text("{not json")
    assert "not a gatekeeper verdict" in _bad(capsys, a, tmp_path / "broken.json")
    (tmp_path / "empty").mkdir()
    assert "neither a report directory" in _bad(capsys, a, tmp_path / "empty")
    assert not (tmp_path / "reports").exists()  # nothing written on bad input


def test_a_bundle_must_be_checked_before_it_can_be_diffed(bundle_copy, two_reports, tmp_path, capsys, monkeypatch):
    a, _ = two_reports
    monkeypatch.chdir(tmp_path)
    err = _bad(capsys, bundle_copy, a)
    assert "has no report at reports/tiny/v1/verdict.json; run `gatekeeper check" in err


def test_two_candidates_trained_with_different_ranks(ranked_candidates, capsys, monkeypatch):
    """The acceptance path: two real bundles, diffed by their default report location."""
    workdir, v1, v2 = ranked_candidates
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["diff", str(v1), str(v2)]) == 0
    out = capsys.readouterr().out
    diff = diff_verdicts(*(json_verdict(workdir / "reports" / "tiny" / v / "verdict.json") for v in ("v1", "v2")))
    accuracy = next(g for g in diff.gates if g.gate == "task_accuracy")
    assert accuracy.metrics[0].a != accuracy.metrics[0].b  # rank changed what the adapter learned...
    assert accuracy.flips  # ...item by item
    assert f"{len(accuracy.flips)} of {accuracy.compared} items changed outcome" in out
    for flip in accuracy.flips[:5]:
        assert any(flip.item in line for line in out.splitlines())
    assert any("adapter.r" in line and "4" in line and "16" in line for line in out.splitlines())
    assert (workdir / "reports" / "diffs" / "tiny-v1--tiny-v2.html").is_file()


def test_the_plain_diff_of_two_reports_reads_line_by_line(ranked_candidates):
    workdir, _, _ = ranked_candidates
    pages = [(workdir / "reports" / "tiny" / v / "report.html").read_text().split("<!-- timing")[0] for v in ("v1", "v2")]
    a, b = (page.splitlines() for page in pages)
    changed = [line for line in difflib.unified_diff(a, b, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed and len(changed) < (len(a) + len(b)) / 3  # the candidates share most of their report
    # Each changed line is whole elements: a row, a list item, a plot; never a fragment of one
    for line in changed:
        body = line[1:]
        assert body.startswith("<") and body.endswith(">"), line
    assert any(line.startswith('-<tr class="passed"><td><a href="#gate-task_accuracy">') for line in changed)
    assert any(line.startswith('+<tr class="passed"><td><a href="#gate-task_accuracy">') for line in changed)
    assert any(line.startswith("+<tr><th>adapter.r</th><td><code>16</code>") for line in changed)
    unchanged = ("tokenizer sha256", "chat template sha256", "golden set eval", "base sha256")
    assert not any(name in line for line in changed for name in unchanged)


def json_verdict(path):
    from gatekeeper.verdict.files import load_verdict

    return load_verdict(path)
