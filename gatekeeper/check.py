"""``gatekeeper check``: bundle in, verdict and reports out.

Order matters: every hash and every gate parameter is checked before a model
is loaded, and reports are written only once the verdict exists, so a bad
bundle costs seconds and leaves nothing half-written.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from gatekeeper import __version__
from gatekeeper.bundle.base import ResolvedBase, cache_root, resolve_base
from gatekeeper.bundle.manifest import Bundle, LoadedBundle, build_gates, load_bundle
from gatekeeper.runtime.cache import CachedRuntime, ResponseCache
from gatekeeper.gating.engine import PhaseReporter, run_gates
from gatekeeper.errors import BundleError
from gatekeeper._util.hashing import sha256_json
from gatekeeper.release.replay import DEFAULT_ITEMS, write_record
from gatekeeper.report.render import write_reports
from gatekeeper.bundle.signing import SignatureStatus, verify_signature
from gatekeeper.verdict.model import BundleSummary, Verdict, exit_code_for


@dataclass
class Prepared:
    bundle: LoadedBundle
    gates: list
    base: ResolvedBase
    runtime: object  # an HFRuntime, before any weights are loaded
    signature: SignatureStatus


def adapter_sha256(bundle: LoadedBundle) -> str:
    return sha256_json(bundle.manifest.adapter.files)


def prepare(path: str | Path, *, device: str | None = None, allow_unsigned: bool = False) -> Prepared:
    """Everything short of loading weights: hashes, signature, gates, base identity, tokenizer."""
    from gatekeeper.runtime.hf.runtime import HFRuntime

    bundle = load_bundle(path)
    signature = verify_signature(bundle.root)
    if not signature.ok and not (allow_unsigned and signature.state == "unsigned"):
        hint = " (pass --allow-unsigned to check it anyway)" if signature.state == "unsigned" else ""
        raise BundleError(signature.detail + hint)
    gates = build_gates(bundle.manifest)
    manifest = bundle.manifest
    base = resolve_base(manifest.base.ref, relative_to=bundle.root)
    if base.sha256 != manifest.base.sha256:
        raise BundleError(
            f"adapter was trained for base sha256 {manifest.base.sha256[:12]}…, "
            f"but {manifest.base.ref!r} is {base.sha256[:12]}…"
        )
    serving = manifest.serving
    runtime = HFRuntime(
        base, bundle.adapter_dir, adapter_sha256(bundle),
        device=device or serving.device, dtype=serving.dtype, quantization=serving.quantization,
        batch_size=serving.batch_size, adapter_kind=manifest.adapter.kind,
    )
    found = runtime.fingerprint()
    # With a template_drift gate the difference is reported, with a diff, as a gate failure.
    watched = any(spec.name == "template_drift" for spec in manifest.gates)
    for key in () if watched else ("tokenizer_sha256", "chat_template_sha256"):
        recorded = getattr(manifest.base, key)
        if found[key] != recorded:
            what = key.removesuffix("_sha256").replace("_", " ")
            raise BundleError(f"{what} of base {manifest.base.ref!r} differs from the one the adapter was trained with")
    return Prepared(bundle, gates, base, runtime, signature)


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
        "device": identity["device"],
        "dtype": identity["dtype"],
    }


TRAINING_FIELDS = ("method", "steps", "best_step", "best_val_loss", "val_curve", "seed", "corpus_sha256",
                   "adapter_bytes", "base_bytes", "optimizer_state_bytes")
CURVE_POINTS = 100  # enough for a plot; a full per-step curve would swamp verdict.json


def _thin(curve: list, points: int = CURVE_POINTS) -> list:
    """Every k-th point and always the last, so the plot keeps its shape and its end."""
    step = -(-len(curve) // points) or 1
    kept = curve[::step]
    return kept if not curve or kept[-1] == curve[-1] else kept + [curve[-1]]


def _training_summary(bundle: LoadedBundle) -> dict:
    """What the report and ``gatekeeper diff`` show of how the candidate was made."""
    manifest = bundle.manifest
    if manifest.training is None:
        return {}
    record = json.loads(bundle.path(manifest.training).read_text(encoding="utf-8"))
    summary = {k: record[k] for k in TRAINING_FIELDS if k in record}
    if record.get("train_curve"):
        summary["train_curve"] = _thin(record["train_curve"])
    if manifest.recipe is not None:
        recipe = yaml.safe_load(bundle.path(manifest.recipe).read_text(encoding="utf-8")) or {}
        # Flat "section.key" names, so two candidates' settings compare line by line.
        summary["hyperparameters"] = {
            f"{section}.{key}": value
            for section in ("adapter", "galore", "training")
            for key, value in sorted((recipe.get(section) or {}).items())
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
        training=_training_summary(bundle),
    )


def default_report_dir(manifest: Bundle) -> Path:
    """Where ``gatekeeper check`` writes a bundle's reports unless told otherwise."""
    return Path("reports") / manifest.name / f"v{manifest.version}"


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
        results = run_gates(prepared.bundle, prepared.gates, served, report_phase, report_dir=out_dir)
        # Only when a gate asked the adapter anyway: a check of data alone loads no model for a record.
        if record and replay_items > 0 and any({"adapter", "merged"} & set(gate.sides) for gate, _ in prepared.gates):
            # Recorded fresh, as one batch, exactly as a drill replays it: a cached answer
            # decoded in another batch could differ from a replay by a float-level tie.
            # An intact record the registry already vouches for is kept, so a re-check stays cheap.
            from gatekeeper.release.channels import registered_replay

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
    if record:  # promote reads the latest verdict from the registry, a rollback drill the replay record
        from gatekeeper.release.channels import record_check

        record_check(prepared.bundle, str(prepared.signature), paths["verdict.json"], verdict.passed, verdict.exit_code,
                     replay_path)
    return verdict, paths
