"""Plan every gate's requests before any model loads, ask the runtime once per side and kind, hand answers back.

Gates never call a model. ``plan_gates`` asks each gate what it needs while the
check is prepared, so a bundle problem a gate finds (a golden set it needs that
the bundle lacks) is bad input, reported before a model loads, and a gate whose
requests the runtime cannot answer is ``skipped`` with the reason. ``run_plan``
then de-duplicates requests across gates (two gates that need the same greedy
answer share one generation) and sends them in one batch per side and kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gatekeeper._util.text import first_line
from gatekeeper.bundle.loading import LoadedBundle
from gatekeeper.errors import BundleError, GateCrashed, GatekeeperError
from gatekeeper.gating.context import GateContext
from gatekeeper.gating.result import GateResult
from gatekeeper.runtime.protocol import ANSWERED_BY, Capabilities, Runtime
from gatekeeper.runtime.requests import Progress, Request, Side

# (label, total) -> a callback that advances by n
PhaseReporter = Callable[[str, int], Progress]


def context_for(bundle: LoadedBundle, runtime: Runtime, report_dir: Path | None = None) -> GateContext:
    return GateContext(bundle, serving=runtime.profile(), report_dir=report_dir, dtype=runtime.dtype_name,
                       runtime_name=runtime.name)


def inapplicable_reason(gate, bundle: LoadedBundle) -> str:
    """Why ``gate`` does not judge this bundle's adapter kind; empty when it does.

    A gate may name the adapter kinds it can judge (``adapter_kinds = ("lora",)``); by default it judges all.
    """
    kinds = getattr(gate, "adapter_kinds", None)
    kind = bundle.manifest.adapter.kind
    if kinds is None or kind in kinds:
        return ""
    return f"does not apply: it judges adapter kinds {', '.join(kinds)}, and this bundle's adapter is {kind!r}"


@dataclass
class Plan:
    """Every gate's requests, known before any model loads."""

    ctx: GateContext
    gates: list  # (gate, required) pairs, in bundle order
    requests: dict[str, list[Request]] = field(default_factory=dict)  # gate name -> what it asks
    skipped: dict[str, str] = field(default_factory=dict)  # gate name -> why it will not be evaluated
    crashed: dict[str, Exception] = field(default_factory=dict)  # a gate's own bug in requests()

    def sides(self) -> list[Side]:
        return sorted({side for gate, _ in self.gates if gate.name in self.requests for side in gate.sides})


def plan_gates(ctx: GateContext, gates: list, capabilities: Capabilities) -> Plan:
    """Ask each gate for its requests; a ``GatekeeperError`` from a gate is bad input and propagates."""
    plan = Plan(ctx, gates)
    for gate, _ in gates:
        reason = inapplicable_reason(gate, ctx.bundle)
        if reason:
            plan.skipped[gate.name] = reason
            continue
        try:
            requests = gate.requests(ctx)
        except GatekeeperError as exc:  # the bundle does not give the gate what it needs
            # A BundleError whatever the gate raised: error classes take other arguments (GoldenSetError
            # takes a path and line), and every one of them is the same exit 2 for the user.
            raise BundleError(f"gate {gate.name!r}: {first_line(exc)}") from None
        except Exception as exc:  # reported as that gate's error; the others still run
            plan.crashed[gate.name] = exc
            continue
        unanswered = sorted({(r.kind, side) for r in requests for side in gate.sides
                             if not capabilities.answers(r.kind, side)})
        if unanswered:
            kind, side = unanswered[0]
            plan.skipped[gate.name] = f"the {ctx.runtime_name} runtime cannot answer it: {capabilities.reason(kind, side)}"
            continue
        plan.requests[gate.name] = requests
    return plan


class Responses:
    def __init__(self, table: dict[tuple[Side, str], Any]):
        self._table = table

    def get(self, side: Side, request: Request) -> Any:
        return self._table[(side, request.key)]


def _ask(plan: Plan, runtime: Runtime, report_phase: PhaseReporter | None) -> Responses:
    wanted: dict[Side, dict[str, Request]] = {}
    for gate, _ in plan.gates:
        for side in gate.sides if gate.name in plan.requests else ():
            bucket = wanted.setdefault(side, {})
            for request in plan.requests[gate.name]:
                bucket.setdefault(request.key, request)
    table: dict[tuple[Side, str], Any] = {}
    for side in sorted(wanted):
        requests = list(wanted[side].values())
        for kind, method in ANSWERED_BY.items():
            batch = [r for r in requests if r.kind == kind]
            if not batch:
                continue
            progress = report_phase(f"{side}: {kind}", len(batch)) if report_phase else None
            for request, answer in zip(batch, getattr(runtime, method)(side, batch, progress)):
                table[(side, request.key)] = answer
    return Responses(table)


def skipped_result(gate, reason: str) -> GateResult:
    """Said in the verdict, never passed: nothing was checked."""
    return GateResult(name=gate.name, status="skipped", rule="", summary=f"skipped: {reason}", skip_reason=reason)


def run_plan(plan: Plan, runtime: Runtime, report_phase: PhaseReporter | None = None) -> list[GateResult]:
    responses = _ask(plan, runtime, report_phase)
    results = []
    for gate, required in plan.gates:
        try:
            if gate.name in plan.crashed:
                raise plan.crashed[gate.name]
            if gate.name in plan.skipped:
                result = skipped_result(gate, plan.skipped[gate.name])
            else:
                result = gate.evaluate(plan.ctx, responses)
        except Exception as exc:
            result = GateResult(name=gate.name, status="error", rule="", error=str(GateCrashed(gate.name, exc)))
        result.required = required
        results.append(result)
    return results


def run_gates(bundle: LoadedBundle, gates: list, runtime: Runtime, report_phase: PhaseReporter | None = None,
              report_dir: Path | None = None) -> list[GateResult]:
    """Plan and run in one call, for callers that hold the runtime already (tests, benchmarks)."""
    plan = plan_gates(context_for(bundle, runtime, report_dir), gates, runtime.capabilities())
    return run_plan(plan, runtime, report_phase)
