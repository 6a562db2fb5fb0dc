"""A fake bundle and fake answers, for engine, report and diff logic without a model."""

from __future__ import annotations

import json

from gatekeeper.bundle.goldens import Contract, GoldenItem
from gatekeeper.bundle.loading import LoadedBundle
from gatekeeper.bundle.manifest import (
    AdapterRef,
    BaseRef,
    Bundle,
    FileRef,
    GateSpec,
    PromptTemplate,
    TaskSpec,
)
from gatekeeper.gating.engine import run_gates
from gatekeeper.gating.registry import get_gate
from gatekeeper.testing import FakeRuntime
from gatekeeper.verdict.model import BundleSummary, Verdict, exit_code_for
from tests.conftest import CONTRACT, tiny_items

ITEMS = tiny_items("eval", 80)
TRUTH = {i["input"]: i["expected"] for i in ITEMS}


def make_bundle(items) -> LoadedBundle:
    ref = FileRef(path="x", sha256="0" * 64)
    manifest = Bundle(
        name="fake", version=1,
        base=BaseRef(ref="fake", sha256="0" * 64, tokenizer_sha256="0", chat_template_sha256="0"),
        adapter=AdapterRef(files={}), task=TaskSpec(contract=ref, prompt=PromptTemplate()),
        golden_sets={"eval": ref}, gates=[GateSpec(name="json_parse"), GateSpec(name="task_accuracy")],
    )
    golden = [GoldenItem(i["id"], i["input"], i["expected"], n) for n, i in enumerate(items, 1)]
    return LoadedBundle(root=CONTRACT.parent, manifest=manifest, manifest_sha256="0", contract=Contract.load(CONTRACT),
                        golden={"eval": golden})


def perfect(text):
    return json.dumps(TRUTH[text])


def chatty(text):
    return f"The priority is {TRUTH[text]['priority']}."


def build(*specs):
    return [(get_gate(name).build(params), required) for name, params, required in specs]


def right_on(inputs: set[str]):
    """An adapter that answers perfectly on the given inputs and chats on the rest."""
    return lambda text: perfect(text) if text in inputs else chatty(text)


def fake_verdict(adapter, base=chatty, version: int = 1, items=ITEMS, rank: int = 8) -> Verdict:
    """A complete verdict for json_parse (min_rate 0.5) and task_accuracy, as ``gatekeeper check`` would write it."""
    gates = build(("json_parse", {"min_rate": 0.5}, True), ("task_accuracy", {}, True))
    results = run_gates(make_bundle(items), gates, FakeRuntime({"base": base, "adapter": adapter}))
    code = exit_code_for(results)
    bundle = BundleSummary(
        path=f"adapters/fake/v{version}", name="fake", version=version, manifest_sha256=f"{version:064x}",
        base="fake-base", base_sha256="b" * 64, adapter_sha256=f"{version * 7:064x}", tokenizer_sha256="t" * 64,
        chat_template_sha256="c" * 64, golden_sets={"eval": "e" * 64}, signature="valid (key 0123456789abcdef)",
        training={"method": "lora", "steps": 30, "best_step": 20, "best_val_loss": 0.5 + version / 100,
                  "val_curve": [[0, 2.0], [10, 1.0], [20, 0.5 + version / 100], [30, 0.6]],
                  "train_curve": [[1, 2.1], [10, 1.2], [20, 0.6], [30, 0.4]],
                  "hyperparameters": {"adapter.r": rank, "adapter.alpha": 2 * rank, "training.learning_rate": 0.001}},
    )
    return Verdict(gatekeeper_version="0", passed=code == 0, exit_code=int(code), bundle=bundle, gates=results,
                   environment={"python": "3", "torch": "2"}, timing={"check_seconds": 1.0})
