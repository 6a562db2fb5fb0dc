"""latency_memory: figures for base, unmerged and merged on a tiny model; budgets that fail; timings never cached."""

import json

import pytest

from gatekeeper.bundle.manifest import messages_for
from gatekeeper.cli import main
from gatekeeper.gating.engine import run_gates
from gatekeeper.runtime.cache import CachedRuntime, ResponseCache
from gatekeeper.runtime.requests import Timing
from gatekeeper.testing import FakeRuntime
from tests.conftest import edit_manifest
from tests.fakes import ITEMS, build, make_bundle, perfect

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = {"prompts": 2, "repeats": 2, "warmup": 1}


def _gate(**params):
    return lambda data: data.update(gates=[{"name": "latency_memory", "params": {**QUICK, **params}}])


def _result(out):
    return json.loads((out / "verdict.json").read_text())["gates"][0]


def test_reports_base_unmerged_and_merged_and_fails_a_tight_budget(bundle_copy, tmp_path):
    edit_manifest(bundle_copy, _gate())
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "open"), "-q"]) == 0
    result = _result(tmp_path / "open")
    figures = result["details"]["figures"]
    assert set(figures) == {"base", "adapter", "merged"}
    for side in figures.values():
        assert side["runs"] == 4 and side["device"] == "cpu" and side["memory"] == "process RSS"
        assert 0 < side["p50_ms"] <= side["p95_ms"] and side["first_token_p50_ms"] <= side["p95_ms"]
        assert side["tokens_per_second"] > 0 and side["peak_mib"] > 0
    assert "never read from the response cache" in result["details"]["cache"]
    assert result["rule"].startswith("no budget set")
    html = (tmp_path / "open" / "report.html").read_text()
    assert "p95_ms_merged" in html and "latency_ratio" in html

    # a budget no model can meet: both ways of serving the adapter are named
    edit_manifest(bundle_copy, _gate(max_p95_ms=0.001, max_peak_mib=100000.0))
    assert main(["check", str(bundle_copy), "--out", str(tmp_path / "tight"), "-q"]) == 1
    result = _result(tmp_path / "tight")
    assert result["status"] == "failed"
    assert "adapter: p95 latency" in result["summary"] and "merged: p95 latency" in result["summary"]
    assert "peak memory" not in result["summary"]  # the generous memory budget holds
    assert result["metrics"][0]["threshold"] == 0.001 and len(result["details"]["slowest_prompts_ms"]) == 2


def test_a_latency_ratio_to_the_base_is_a_budget_too():
    runtime = FakeRuntime({"base": perfect, "adapter": perfect}, latency_ms={"base": 10.0, "adapter": 35.0, "merged": 11.0})
    gates = build(("latency_memory", {"max_latency_ratio": 2.0}, True))
    result = run_gates(make_bundle(ITEMS[:8]), gates, runtime)[0]
    assert result.status == "failed"
    assert "adapter: p95 latency 3.50x the base's > 2x" in result.summary and "merged:" not in result.summary
    assert result.metric("latency_ratio").adapter == 3.5 and result.metric("latency_ratio_merged").adapter == 1.1


def test_timings_bypass_the_response_cache(tmp_path):
    inner = FakeRuntime({})
    cached = CachedRuntime(inner, ResponseCache(tmp_path / "c.sqlite"))
    requests = [Timing(messages_for("q"), 4, repeats=2, warmup=0)]
    cached.timing("adapter", requests)
    cached.timing("adapter", requests)
    assert inner.calls == [("adapter", 1), ("adapter", 1)]  # measured twice
    assert (cached.hits, cached.misses) == (0, 0)
