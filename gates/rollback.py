"""rollback: if this candidate ships and misbehaves, can the version it replaces be brought back?

The gate runs the restore drill (``gatekeeper.release.restore``) on the adapter's
current production version from the version store: every hash and the
signature verified, then its recorded outputs replayed through a fresh
runtime for that version. It asks the candidate's runtime nothing.

This is the one gate that loads a model itself. The runtime under check
serves the candidate's sides, while the drill needs another version's
adapter and possibly another base, built exactly as that version is served;
and its answers must never come from the response cache. Loading that version
through the same path a real restore takes is the point of the drill.
"""

from __future__ import annotations

from pathlib import Path

from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import Example, GateResult, Metric

RULE = "the production version restores (hashes, signature, base, tokenizer) and replays its recorded outputs identically"


@gate("rollback")
class Rollback:
    """The current production version restores with every hash verified and replays its recorded outputs identically."""

    sides = ()

    def __init__(self, store: str | None = None, replay: bool = True, max_items: int | None = None,
                 device: str | None = None):
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        if store and Path(store).expanduser().is_absolute() and not Path(store).expanduser().is_file():
            raise ValueError(f"store {store!r} does not exist")
        self.store, self.replay, self.max_items, self.device = store, replay, max_items, device

    def requests(self, ctx):
        return []

    def _store_path(self, ctx) -> Path:
        from gatekeeper.release.store import store_for

        if self.store:
            path = Path(self.store).expanduser()
            return path if path.is_absolute() else ctx.bundle.root / path
        return store_for(ctx.bundle.root)

    def evaluate(self, ctx, responses):
        from gatekeeper.release.restore import drill
        from gatekeeper.release.store import VersionStore

        name = ctx.bundle.manifest.name
        path = self._store_path(ctx)
        production = None
        if path.is_file():
            with VersionStore(path) as store:
                production = store.production(name)
                result = drill(store, name, production.version, device=self.device, replay=self.replay,
                               max_items=self.max_items) if production else None
        if production is None:
            where = f"store {path}" if path.is_file() else f"no version store at {path}"
            return GateResult(name=self.name, status="passed", rule=RULE,
                              summary=f"nothing to roll back to: {name} has no production version ({where})",
                              details={"store": str(path), "production": None})
        status = "passed" if result.ok else "failed"
        summary = (f"v{result.version} restores" + (f" and replays {result.replayed} outputs identically"
                                                     if result.replayed and result.ok else "")
                   if result.ok else f"v{result.version} cannot be restored: " + "; ".join(result.problems))
        if result.note:
            summary += f" ({result.note})"
        evidence = [
            Example(id=d["id"], input=d["input"], base_output=d["recorded"], adapter_output=d["replayed"],
                    base_ok=True, adapter_ok=False, note=f"left: recorded when v{result.version} was checked; right: replayed now")
            for d in result.diffs[:5]
        ]
        return GateResult(
            name=self.name, status=status, rule=RULE, summary=summary,
            metrics=[
                Metric(name="restore_problems", adapter=len(result.problems), threshold=0, higher_is_better=False),
                Metric(name="replayed_outputs_differing", adapter=len(result.diffs), threshold=0, higher_is_better=False),
                Metric(name="replayed_outputs", adapter=result.replayed),
            ],
            evidence=evidence,
            details={"store": str(path), "production": f"{name} v{result.version}", "bundle": result.path,
                     "verified": result.verified, "problems": result.problems, "note": result.note,
                     "replay": "through a fresh runtime for that version, never through the response cache"},
        )
