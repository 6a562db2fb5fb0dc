"""The restore drill: bring a registered version back and prove it is the one that was checked.

Everything the version shipped with is restored together (base, adapter,
tokenizer, chat template, configuration) and verified: the bundle's file
hashes and signature, the manifest against the one registered, the base's
weights and the tokenizer and chat template against the hashes recorded at
training time. Then the version's replay record is run again through a fresh
runtime for that version, never through the response cache (a cached answer
would only prove the cache remembers), and every output must come out
identical.

The ``rollback`` gate runs this drill on the current production version before
a candidate replaces it; ``gatekeeper rollback --to vN`` runs it on the version
it is about to restore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gatekeeper._util.text import first_line
from gatekeeper.bundle.base import base_fingerprint
from gatekeeper.bundle.signing import load_verified
from gatekeeper.errors import GatekeeperError
from gatekeeper.gating.registry import build_gates
from gatekeeper.release.replay import read_record
from gatekeeper.release.store import VersionStore
from gatekeeper.runtime.select import bundle_base, open_runtime


@dataclass
class DrillResult:
    name: str
    version: int
    path: str
    problems: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    diffs: list[dict] = field(default_factory=list)  # id, input messages, recorded, replayed
    replayed: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def drill(store: VersionStore, name: str, version: int, *, device: str | None = None, replay: bool = True,
          max_items: int | None = None) -> DrillResult:
    row = store.version(name, version)
    result = DrillResult(name, version, row.path)
    try:
        bundle, signature = load_verified(row.path)  # file hashes and signature
        build_gates(bundle.manifest)  # its gate parameters still hold
        base = bundle_base(bundle)  # the base it was trained on, by hash
        runtime = open_runtime(bundle, base, device=device)
    except GatekeeperError as exc:
        result.problems.append(first_line(exc))
        return result
    result.verified.append(f"{len(bundle.manifest.file_refs())} file hashes, signature {signature}, base sha256")
    if bundle.manifest_sha256 != row.manifest_sha256:
        result.problems.append(f"{row.path}/bundle.yaml differs from the one registered for v{version}")
        return result
    found = base_fingerprint(base.path)
    for key in ("tokenizer_sha256", "chat_template_sha256"):
        if found[key] != getattr(bundle.manifest.base, key):
            result.problems.append(f"{key.removesuffix('_sha256').replace('_', ' ')} of base {bundle.manifest.base.ref!r} "
                                   f"differs from the one v{version} was trained with")
    if result.problems:
        return result
    result.verified.append("bundle.yaml as registered, tokenizer and chat template hashes")
    if not replay:
        result.note = "outputs not replayed (replay off)"
        return result
    record = store.latest_replay(name, version, row.manifest_sha256)
    if record is None:
        result.note = f"v{version} has no replay record (checked before records were kept): outputs not replayed"
        return result
    try:
        header, entries = read_record(Path(record["path"]), record["sha256"])
    except GatekeeperError as exc:
        result.problems.append(first_line(exc))
        return result
    # (a shorter replay decodes in a smaller batch: identical on the CPU in practice, but only the
    # full record replays the recording batch exactly)
    entries = entries[:max_items] if max_items else entries
    outputs = runtime.generate("adapter", [request for _, request, _ in entries])
    for (item_id, request, recorded), replayed in zip(entries, outputs):
        if replayed != recorded:
            result.diffs.append({"id": item_id, "input": dict(request.messages).get("user", ""),
                                 "recorded": recorded, "replayed": replayed})
    result.replayed = len(entries)
    if result.diffs:
        runtime_now = runtime.identity("adapter")
        changed = sorted(k for k in set(header.get("runtime", {})) | set(runtime_now)
                         if header.get("runtime", {}).get(k) != runtime_now.get(k))
        why = f" (runtime differs from the recording in: {', '.join(changed)})" if changed else ""
        result.problems.append(f"{len(result.diffs)} of {len(entries)} replayed outputs differ from "
                               f"{Path(record['path']).name}{why}")
    else:
        result.verified.append(f"{len(entries)} recorded outputs replayed identically")
    return result
