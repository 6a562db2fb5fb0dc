"""A real vLLM server (CPU build, 127.0.0.1) checked through the openai runtime, and the faults it exists to catch.

The embedded base and a candidate trained on it for a few steps (JSON tickets:
its answers differ from the base's on every item, so a no-op cannot hide),
served by ``python -m vllm.entrypoints.openai.api_server`` started here and
stopped at the end. Skipped, with the reason, where ``make vllm-env`` could not
install vLLM's CPU build.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gatekeeper.cli import main
from tests.conftest import edit_manifest
from tests.serving.faults import fault_proxy
from tests.serving.vllm_server import free_port, vllm_server, vllm_unavailable_reason

NO_OP_NAME = "candidate-without-lora"
ITEMS = 12  # evaluation tickets per check: enough for every planted fault to show, cheap on 2 cores

pytestmark = [pytest.mark.serving, pytest.mark.skipif(vllm_unavailable_reason() is not None,
                                                      reason=vllm_unavailable_reason() or "")]

# A template that renders the same conversation in another format: what a server started
# with the wrong --chat-template serves.
OTHER_TEMPLATE = ("{% for m in messages %}### {{ m['role'] | upper }}:\n{{ m['content'] }}\n\n{% endfor %}"
                  "{% if add_generation_prompt %}### ASSISTANT:\n{% endif %}")


@pytest.fixture(scope="module")
def candidate(demo_candidate, tmp_path_factory) -> Path:
    """The demo candidate (shared with the end-to-end tests), gated by serving_parity on its first tickets."""
    bundle = tmp_path_factory.mktemp("serving") / "bundle"
    shutil.copytree(demo_candidate[0], bundle)
    def gate_parity_in_float32(manifest: dict) -> None:
        manifest["gates"] = [{"name": "serving_parity", "params": {"max_items": ITEMS}}]
        # The server computes in float32; so must the reference (its `auto` is bfloat16 on a CPU with
        # AVX512-BF16), or the two differ by their rounding, not by how they serve the adapter.
        manifest.setdefault("serving", {})["dtype"] = "float32"

    edit_manifest(bundle, gate_parity_in_float32)
    return bundle


@pytest.fixture(scope="module")
def base_dir(candidate) -> Path:
    from gatekeeper.bundle.base import DEFAULT_BASE, resolve_base

    return resolve_base(DEFAULT_BASE).path


@pytest.fixture(scope="module")
def server(candidate, base_dir, tmp_path_factory):
    # The base is served under a second name too, one that looks like an adapter's: what a server
    # started without --lora-modules serves under the adapter's name (one start-up fewer).
    with vllm_server(base_dir, {"candidate": candidate / "adapter"}, served_names=("base", NO_OP_NAME),
                     log_dir=tmp_path_factory.mktemp("log")) as s:
        yield s


def _check(bundle: Path, out: Path, url: str, *, adapter: str = "candidate", extra=()) -> int:
    return main(["check", str(bundle), "--out", str(out), "-q", "--runtime", "openai", "--base-url", url,
                 "--base-model", "base", "--adapter-model", adapter, *extra])


def _gate(out: Path, name: str) -> dict:
    return next(g for g in json.loads((out / "verdict.json").read_text())["gates"] if g["name"] == name)


def _metrics(gate: dict) -> dict:
    return {m["name"]: m["adapter"] for m in gate["metrics"]}


@pytest.fixture(scope="module")
def served(candidate, server, tmp_path_factory) -> Path:
    """The candidate checked through the server: the report directory."""
    out = tmp_path_factory.mktemp("served")
    assert _check(candidate, out, server.base_url) == 0
    return out


def test_the_served_candidate_answers_as_the_reference(candidate, served, tmp_path):
    parity = _gate(served, "serving_parity")
    assert parity["status"] == "passed", parity["summary"]
    figures = _metrics(parity)
    assert figures["adapter_same_outcome"] >= 0.95 and figures["base_same_outcome"] >= 0.95
    print("\nserving_parity on vLLM CPU:", figures)
    # The same gate on the reference runtime itself is skipped, with its reason, never passed:
    # with nothing else required, such a check does not pass either.
    assert main(["check", str(candidate), "--out", str(tmp_path / "hf"), "-q"]) == 1
    assert _gate(tmp_path / "hf", "serving_parity")["status"] == "skipped"


def test_a_server_without_the_adapter_fails_as_a_no_op(candidate, server, tmp_path):
    # The adapter's name served by the base: the request succeeds and silently does nothing.
    assert _check(candidate, tmp_path / "r", server.base_url, adapter=NO_OP_NAME) == 1
    parity = _gate(tmp_path / "r", "serving_parity")
    assert parity["status"] == "failed" and "silent no-op" in parity["summary"]
    assert _metrics(parity)["noop_gap"] > 0.5


def test_a_server_with_another_chat_template_fails_with_evidence(candidate, base_dir, tmp_path):
    with vllm_server(base_dir, {"candidate": candidate / "adapter"}, chat_template=OTHER_TEMPLATE,
                     log_dir=tmp_path / "log") as other:
        assert _check(candidate, tmp_path / "r", other.base_url) == 1
    parity = _gate(tmp_path / "r", "serving_parity")
    assert parity["status"] == "failed" and parity["evidence"]
    assert "first difference at word" in parity["evidence"][0]["note"]


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_an_unreachable_endpoint_is_one_line_before_any_gate(candidate, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert _check(candidate, tmp_path / "r", url, extra=("--no-cache",)) == 2
    line = _one_error_line(capsys)
    assert url in line and "unreachable" in line and not (tmp_path / "r").exists()


def test_a_model_name_the_server_does_not_know_is_one_line(candidate, server, tmp_path, capsys):
    assert _check(candidate, tmp_path / "r", server.base_url, adapter="no-such-adapter") == 2
    line = _one_error_line(capsys)
    assert "no-such-adapter" in line and server.base_url in line and "candidate" in line
    assert not (tmp_path / "r").exists()


def test_a_server_that_does_not_answer_in_time_is_one_line(candidate, server, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(candidate, copy)
    # A short timeout in the bundle's own serving section; the command line still names the endpoint.
    edit_manifest(copy, lambda d: d["serving"].update(openai={
        "base_url": "http://127.0.0.1:1/v1", "base_model": "base", "adapter_model": "candidate",
        "timeout_s": 2, "max_retries": 1}))
    with fault_proxy(server.port, delay_s=30) as proxy:
        assert _check(copy, tmp_path / "r", proxy.base_url) == 2
    line = _one_error_line(capsys)
    assert proxy.base_url in line and "no answer within 2 s" in line and not (tmp_path / "r").exists()


def test_dropped_connections_are_retried_and_every_answer_arrives_once(candidate, server, served, tmp_path):
    with fault_proxy(server.port, drop_every=3) as proxy:
        assert _check(candidate, tmp_path / "dropped", proxy.base_url, extra=("--no-cache",)) == 0
    assert proxy.stats.dropped > 0, "the proxy dropped nothing: the test proved nothing"
    direct, dropped = (json.loads((d / "verdict.json").read_text())["gates"] for d in (served, tmp_path / "dropped"))
    assert [(g["name"], g["status"], g["metrics"]) for g in direct] == [(g["name"], g["status"], g["metrics"]) for g in dropped]
