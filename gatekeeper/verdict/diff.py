"""``gatekeeper diff``: what changed between two candidates, gate by gate, metric by metric, item by item.

Either side may be a ``verdict.json``, a report directory holding one, or a
bundle whose reports sit at the default location ``gatekeeper check`` writes
to. Items are compared through each gate's per-item outcomes, so a diff
names the items that one candidate gets right and the other gets wrong, and
tests whether that difference is more than noise (exact McNemar, paired on
the same items).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gatekeeper.gating.result import Example, GateResult
from gatekeeper.gating.stats import mcnemar_exact
from gatekeeper.verdict.model import Verdict


@dataclass(frozen=True)
class MetricChange:
    gate: str
    metric: str
    base_a: float | None
    base_b: float | None
    a: float | None
    """Candidate A's (adapter) value."""
    b: float | None
    higher_is_better: bool = True

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else round(self.b - self.a, 6)

    @property
    def direction(self) -> str:
        """``better``, ``worse`` or ``same`` for B against A; empty when a side lacks the metric."""
        if self.change is None:
            return ""
        if self.change == 0:
            return "same"
        return "better" if (self.change > 0) == self.higher_is_better else "worse"


@dataclass(frozen=True)
class Flip:
    """An item one candidate gets right and the other wrong, with what each answered when known."""

    item: str
    a_ok: bool
    b_ok: bool
    a: Example | None
    b: Example | None

    @property
    def input(self) -> str | None:
        shown = self.a or self.b
        return shown.input if shown else None

    @property
    def expected(self):
        shown = self.a or self.b
        return shown.expected if shown else None


@dataclass
class GateChange:
    gate: str
    a: GateResult | None
    """None when the gate was not run for candidate A."""
    b: GateResult | None
    metrics: list[MetricChange] = field(default_factory=list)
    flips: list[Flip] = field(default_factory=list)
    compared: int = 0
    """Items both candidates were judged on."""
    p_value: float | None = None
    """Exact McNemar test of B against A on the shared items."""

    @property
    def status_a(self) -> str:
        return self.a.status if self.a else "absent"

    @property
    def status_b(self) -> str:
        return self.b.status if self.b else "absent"

    @property
    def has_outcomes(self) -> bool:
        return bool(self.a and self.b and self.a.outcomes is not None and self.b.outcomes is not None)

    @property
    def fixed(self) -> list[Flip]:
        return [f for f in self.flips if f.b_ok]

    @property
    def broken(self) -> list[Flip]:
        return [f for f in self.flips if not f.b_ok]


@dataclass(frozen=True)
class LineageRow:
    field: str
    a: str
    b: str

    @property
    def changed(self) -> bool:
        return self.a != self.b


@dataclass
class VerdictDiff:
    a: Verdict
    b: Verdict
    gates: list[GateChange]
    lineage: list[LineageRow]
    warnings: list[str]

    @property
    def label_a(self) -> str:
        return f"{self.a.bundle.name} v{self.a.bundle.version}"

    @property
    def label_b(self) -> str:
        return f"{self.b.bundle.name} v{self.b.bundle.version}"


def _metrics(name: str, a: GateResult | None, b: GateResult | None) -> list[MetricChange]:
    found_a = {m.name: m for m in (a.metrics if a else [])}
    found_b = {m.name: m for m in (b.metrics if b else [])}
    order = list(found_a) + [m for m in found_b if m not in found_a]
    changes = []
    for metric in order:
        ma, mb = found_a.get(metric), found_b.get(metric)
        changes.append(MetricChange(
            name, metric,
            ma.base if ma else None, mb.base if mb else None,
            ma.adapter if ma else None, mb.adapter if mb else None,
            (ma or mb).higher_is_better,
        ))
    return changes


def _flips(a: GateResult, b: GateResult) -> tuple[list[Flip], int]:
    """Items whose outcome differs, in the golden set's order, and how many both were judged on."""
    shared = [item for item in a.outcomes if item in b.outcomes]
    shown_a = {e.id: e for e in a.evidence}
    shown_b = {e.id: e for e in b.evidence}
    flips = [
        Flip(item, a.outcomes[item], b.outcomes[item], shown_a.get(item), shown_b.get(item))
        for item in shared
        if a.outcomes[item] != b.outcomes[item]
    ]
    # What B broke comes first: that is what a reviewer must look at before shipping B.
    flips.sort(key=lambda f: f.b_ok)
    return flips, len(shared)


def _gate_change(name: str, a: GateResult | None, b: GateResult | None) -> GateChange:
    change = GateChange(name, a, b, metrics=_metrics(name, a, b))
    if change.has_outcomes:
        change.flips, change.compared = _flips(a, b)
        change.p_value = round(mcnemar_exact(len(change.broken), len(change.fixed)), 6)
    return change


def _lineage(a: Verdict, b: Verdict) -> list[LineageRow]:
    def facts(v: Verdict) -> dict[str, str]:
        bundle = v.bundle
        rows = {
            "bundle": f"{bundle.name} v{bundle.version}",
            "verdict": "pass" if v.passed else f"fail (exit code {v.exit_code})",
            "base": bundle.base,
            "base sha256": bundle.base_sha256,
            "adapter sha256": bundle.adapter_sha256,
            "tokenizer sha256": bundle.tokenizer_sha256,
            "chat template sha256": bundle.chat_template_sha256,
            "signature": bundle.signature,
        }
        rows |= {f"golden set {name}": digest for name, digest in bundle.golden_sets.items()}
        training = bundle.training
        parent = training.get("parent")
        if isinstance(parent, dict):  # a child (method dpo): which version of which bundle it continues
            rows["parent"] = (f"{parent.get('name')} v{parent.get('version')} "
                              f"(bundle.yaml {str(parent.get('manifest_sha256'))[:12]})")
        rows |= {key.replace("_", " "): str(training[key]) for key in ("method", "steps", "best_step", "best_val_loss")
                 if key in training}
        rows |= {name: json.dumps(value) for name, value in training.get("hyperparameters", {}).items()}
        return rows

    fa, fb = facts(a), facts(b)
    names = list(fa) + [name for name in fb if name not in fa]
    return [LineageRow(name, fa.get(name, "—"), fb.get(name, "—")) for name in names]


def diff_verdicts(a: Verdict, b: Verdict) -> VerdictDiff:
    results_a = {g.name: g for g in a.gates}
    results_b = {g.name: g for g in b.gates}
    names = list(results_a) + [n for n in results_b if n not in results_a]
    gates = [_gate_change(name, results_a.get(name), results_b.get(name)) for name in names]
    warnings = []
    if a.bundle.base_sha256 != b.bundle.base_sha256:
        warnings.append("the candidates were trained on different base models; base columns differ")
    if a.bundle.golden_sets.get("eval") != b.bundle.golden_sets.get("eval"):
        warnings.append("the candidates were evaluated on different eval sets; items are compared where ids match")
    # Gates with a paired comparison judge items one by one; their flips are expected.
    missing = [g.gate for g in gates if g.a and g.b and not g.has_outcomes and (g.a.paired or g.b.paired)]
    if missing:
        warnings.append(f"no per-item outcomes recorded for {', '.join(missing)}: flipped items cannot be listed")
    return VerdictDiff(a, b, gates, _lineage(a, b), warnings)
