"""Collect every gate's requests, ask the runtime once per side, hand responses back.

Gates never call a model. Their requests are de-duplicated across gates (two
gates that need the same greedy answer share one generation) and sent to the
runtime in one batch per side and kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import pydantic
import yaml

from gatekeeper.bundle.manifest import LoadedBundle, PromptTemplate
from gatekeeper.errors import BundleError, GateCrashed
from gatekeeper.bundle.goldens import Contract, GoldenItem
from gatekeeper.bundle.recipe import Recipe
from gatekeeper.runtime.requests import CountTokens, Generate, LogLik, Progress, Request, Runtime, Side
from gatekeeper.verdict.model import GateResult

# (label, total) -> a callback that advances by n
PhaseReporter = Callable[[str, int], Progress]
# request kind -> the runtime method that answers it
RUNTIME_CALLS = {"generate": "generate", "loglik": "loglik", "choose": "choose", "tokens": "count_tokens",
                 "divergence": "divergence", "timing": "timing", "export": "export_merged"}


@dataclass
class GateContext:
    """What a gate may read: the bundle, its golden sets, contract and prompt."""

    bundle: LoadedBundle
    serving: dict | None = None
    """The runtime's serving profile (chat template, special and stop tokens), when it has one."""
    report_dir: Path | None = None
    """Where this check's reports go, for a gate that leaves an artifact beside them."""
    dtype: str = "float32"
    """The dtype the runtime really computes in (the bundle may say ``auto``)."""

    @property
    def contract(self) -> Contract:
        return self.bundle.contract

    @property
    def prompt(self) -> PromptTemplate:
        return self.bundle.manifest.task.prompt

    @cached_property
    def recipe(self) -> Recipe | None:
        """The recipe the candidate was trained with, when the bundle carries one."""
        ref = self.bundle.manifest.recipe
        if ref is None:
            return None
        path = self.bundle.path(ref)
        try:
            return Recipe.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, pydantic.ValidationError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise BundleError(f"{path}: not a valid recipe ({first})") from None

    def golden(self, name: str) -> list[GoldenItem]:
        if name not in self.bundle.golden:
            raise BundleError(f"golden set {name!r} is not in the bundle (it has {', '.join(sorted(self.bundle.golden))})")
        return self.bundle.golden[name]

    def task_request(self, item: GoldenItem) -> Generate:
        """The one request every task gate asks for an item: same prompt, same decoding."""
        return Generate(self.prompt.messages(item.input), self.bundle.manifest.decoding.max_new_tokens)


def applies(gate, bundle: LoadedBundle) -> bool:
    """A gate may name the adapter kinds it can judge (``adapter_kinds = ("lora",)``); by default it judges all."""
    kinds = getattr(gate, "adapter_kinds", None)
    return kinds is None or bundle.manifest.adapter.kind in kinds


def not_applicable(gate, bundle: LoadedBundle) -> GateResult:
    """Said in the verdict rather than silently skipped; nothing to check is not a failure."""
    kind = bundle.manifest.adapter.kind
    return GateResult(
        name=gate.name, status="passed", rule=f"applies to adapter kinds: {', '.join(gate.adapter_kinds)}",
        summary=f"not applicable: the bundle's adapter is of kind {kind!r}", details={"applicable": False},
    )


class Responses:
    def __init__(self, table: dict[tuple[Side, str], Any]):
        self._table = table

    def get(self, side: Side, request: Request) -> Any:
        return self._table[(side, request.key)]


def collect_requests(ctx: GateContext, gates: list) -> tuple[dict[Side, dict[str, Request]], dict[str, Exception]]:
    wanted: dict[Side, dict[str, Request]] = {}
    failed: dict[str, Exception] = {}
    for gate, _ in gates:
        if not applies(gate, ctx.bundle):
            continue
        try:
            requests = gate.requests(ctx)
        except Exception as exc:  # reported as that gate's error, the others still run
            failed[gate.name] = exc
            continue
        for side in gate.sides:
            bucket = wanted.setdefault(side, {})
            for request in requests:
                bucket.setdefault(request.key, request)
    return wanted, failed


def run_gates(
    bundle: LoadedBundle, gates: list, runtime: Runtime, report_phase: PhaseReporter | None = None,
    report_dir: Path | None = None,
) -> list[GateResult]:
    profile = getattr(runtime, "profile", None)
    ctx = GateContext(bundle, serving=profile() if profile else None, report_dir=report_dir,
                      dtype=getattr(runtime, "dtype_name", "float32"))
    wanted, failed = collect_requests(ctx, gates)
    table: dict[tuple[Side, str], Any] = {}
    for side in sorted(wanted):
        requests = list(wanted[side].values())
        for kind, method in RUNTIME_CALLS.items():
            batch = [r for r in requests if r.kind == kind]
            if not batch:
                continue
            progress = report_phase(f"{side}: {kind}", len(batch)) if report_phase else None
            for request, answer in zip(batch, getattr(runtime, method)(side, batch, progress)):
                table[(side, request.key)] = answer
    responses = Responses(table)
    results = []
    for gate, required in gates:
        try:
            if gate.name in failed:
                raise failed[gate.name]
            result = gate.evaluate(ctx, responses) if applies(gate, bundle) else not_applicable(gate, bundle)
        except Exception as exc:
            result = GateResult(name=gate.name, status="error", rule="", error=str(GateCrashed(gate.name, exc)))
        result.required = required
        results.append(result)
    return results


__all__ = ["GateContext", "Responses", "run_gates", "CountTokens", "Generate", "LogLik"]
