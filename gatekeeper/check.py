"""``gatekeeper check``: bundle in, verdict and reports out.

Order matters: every hash and every gate parameter is checked before a model
is loaded, and reports are written only once the verdict exists, so a bad
bundle costs seconds and leaves nothing half-written.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path

from gatekeeper import __version__
from gatekeeper.bundle.base import ResolvedBase, base_fingerprint, cache_root
from gatekeeper.bundle.loading import LoadedBundle
from gatekeeper.bundle.manifest import MANIFEST
from gatekeeper.bundle.signing import SignatureStatus, load_verified
from gatekeeper.errors import BundleError
from gatekeeper.gating.engine import (
    PhaseReporter,
    Plan,
    context_for,
    plan_gates,
    run_plan,
)
from gatekeeper.gating.evidence import thin_curve
from gatekeeper.gating.registry import build_gates
from gatekeeper.release.channels import record_check, registered_replay
from gatekeeper.release.replay import DEFAULT_ITEMS, write_record
from gatekeeper.report.render import write_reports
from gatekeeper.runtime.cache import CachedRuntime, ResponseCache
from gatekeeper.runtime.protocol import Runtime
from gatekeeper.runtime.select import (
    adapter_sha256,
    bundle_base,
    open_runtime,
    with_overrides,
)
from gatekeeper.verdict.files import default_report_dir
from gatekeeper.verdict.model import BundleSummary, Verdict, exit_code_for


@dataclass
class Prepared:
    """A check ready to run: everything known and refused that can be before any weights load."""

    bundle: LoadedBundle
    gates: list
    base: ResolvedBase
    runtime: Runtime  # set up, with no weights loaded yet
    signature: SignatureStatus
    plan: Plan  # every gate's requests, and the gates that will be skipped and why


def check_tokenizer(bundle: LoadedBundle, base: ResolvedBase) -> None:
    """The base's tokenizer and chat template are the ones the adapter was trained with.

    With a template_drift gate the difference is reported, with a diff, as that gate's failure instead.
    """
    if any(spec.name == "template_drift" for spec in bundle.manifest.gates):
        return
    found = base_fingerprint(base.path)
    for key in ("tokenizer_sha256", "chat_template_sha256"):
        if found[key] != getattr(bundle.manifest.base, key):
            what = key.removesuffix("_sha256").replace("_", " ")
            raise BundleError(f"{what} of base {bundle.manifest.base.ref!r} differs from the one the adapter was trained with")


def prepare(path: str | Path, *, device: str | None = None, allow_unsigned: bool = False,
            serving: dict | None = None) -> Prepared:
    """Everything short of loading weights: hashes, signature, gates and their requests, base identity,
    tokenizer, and a serving engine reached. ``serving`` overrides the bundle's serving section
    (``runtime``, ``openai.base_url``, ...; None values are ignored)."""
    bundle, signature = load_verified(path, allow_unsigned=allow_unsigned)
    gates = build_gates(bundle.manifest)
    if not gates:
        raise BundleError(f"{bundle.root / MANIFEST}: 'gates' is empty; a check with nothing to check cannot pass")
    settings = with_overrides(bundle.manifest.serving, serving or {})
    base = bundle_base(bundle)
    check_tokenizer(bundle, base)
    runtime = open_runtime(bundle, base, device=device, serving=settings)
    plan = plan_gates(context_for(bundle, runtime), gates, runtime.capabilities())
    return Prepared(bundle, gates, base, runtime, signature, plan)


def environment(identity: dict) -> dict:
    """Versions and the device and dtype the check computed in (from the runtime's identity)."""
    import peft
    import torch
    import transformers

    return {
        "gatekeeper": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "runtime": identity["runtime"],
        # a serving engine's device and dtype are its own: the verdict names the endpoint and version instead
        **{k: identity[k] for k in ("device", "dtype", "endpoint", "server_version", "vllm") if k in identity},
    }


TRAINING_FIELDS = ("method", "parent", "beta", "steps", "best_step", "best_val_loss", "val_curve", "seed",
                   "corpus_sha256", "adapter_bytes", "base_bytes", "optimizer_state_bytes")


def _training_summary(bundle: LoadedBundle) -> dict:
    """What the report and ``gatekeeper diff`` show of how the candidate was made."""
    record = bundle.training_record
    if record is None:
        return {}
    summary = {k: record[k] for k in TRAINING_FIELDS if k in record}
    if record.get("train_curve"):
        summary["train_curve"] = thin_curve(record["train_curve"])
    if bundle.recipe is not None:
        written = bundle.recipe.model_dump(mode="json", exclude_unset=True)  # what the recipe says, not defaults
        parent = record.get("parent")
        if not written.get("adapter") and isinstance(parent, dict) and isinstance(parent.get("adapter"), dict):
            written["adapter"] = parent["adapter"]  # a dpo child trains its parent's adapter further
        # Flat "section.key" names, so two candidates' settings compare line by line.
        summary["hyperparameters"] = {
            f"{section}.{key}": value
            for section in ("adapter", "galore", "dpo", "training")
            for key, value in sorted((written.get(section) or {}).items())
        }
    return summary


def summarize(bundle: LoadedBundle, signature: SignatureStatus) -> BundleSummary:
    manifest = bundle.manifest
    return BundleSummary(
        path=str(bundle.root),
        name=manifest.name,
        version=manifest.version,
        manifest_sha256=bundle.manifest_sha256,
        base=manifest.base.ref,
        base_sha256=manifest.base.sha256,
        adapter_sha256=adapter_sha256(bundle),
        tokenizer_sha256=manifest.base.tokenizer_sha256,
        chat_template_sha256=manifest.base.chat_template_sha256,
        golden_sets={name: ref.sha256 for name, ref in sorted(manifest.golden_sets.items())},
        signature=str(signature),
        provenance={name: p.model_dump(exclude_none=True) for name, p in sorted(manifest.provenance.items())},
        training=_training_summary(bundle),
    )


def run_check(
    prepared: Prepared,
    out_dir: Path | None = None,
    *,
    use_cache: bool = True,
    cache_path: Path | None = None,
    report_phase: PhaseReporter | None = None,
    record: bool = True,
    replay_items: int = DEFAULT_ITEMS,
) -> tuple[Verdict, dict[str, Path]]:
    """Run the gates and write the reports; with ``record``, register the verdict and a replay record.

    The replay record (``gatekeeper.release.replay``, ``replay_items`` prompts, 0 for
    none) is what a later rollback drill reproduces. It is written once per
    manifest, from the model rather than the cache, in the one batch a drill
    replays. A check whose gates never ask the adapter writes none.
    """
    started = time.perf_counter()
    runtime = prepared.runtime
    out_dir = out_dir or default_report_dir(prepared.bundle.manifest)
    cache = ResponseCache(cache_path or cache_root() / "responses.sqlite") if use_cache else None
    served = CachedRuntime(runtime, cache) if cache else runtime
    replay_path = None
    try:
        # Planned again now the report directory is known (a gate may write an artifact there):
        # asking gates for requests is pure and cheap, and every refusal already happened in prepare.
        plan = plan_gates(context_for(prepared.bundle, runtime, out_dir), prepared.gates, runtime.capabilities())
        results = run_plan(plan, served, report_phase)
        # Only when a gate asked the adapter anyway: a check of data alone loads no model for a record.
        if record and replay_items > 0 and any({"adapter", "merged"} & set(gate.sides) for gate, _ in prepared.gates):
            # Recorded fresh, as one batch, exactly as a drill replays it: a cached answer
            # decoded in another batch could differ from a replay by a float-level tie.
            # An intact record the version store already vouches for is kept, so a re-check stays cheap.
            replay_path = registered_replay(prepared.bundle) or write_record(prepared.bundle, runtime, replay_items)
    finally:
        if cache:
            cache.close()
    code = exit_code_for(results)
    timing = {"check_seconds": round(time.perf_counter() - started, 2)}
    if cache:
        timing |= {"cache_hits": served.hits, "cache_misses": served.misses}
    verdict = Verdict(
        gatekeeper_version=__version__,
        passed=code == 0,
        exit_code=int(code),
        bundle=summarize(prepared.bundle, prepared.signature),
        gates=results,
        environment=environment(runtime.identity("base")),
        timing=timing,
    )
    paths = write_reports(verdict, out_dir)
    if record:  # promote reads the latest verdict from the version store, a rollback drill the replay record
        record_check(prepared.bundle, str(prepared.signature), paths["verdict.json"], verdict.passed, verdict.exit_code,
                     replay_path)
    return verdict, paths
