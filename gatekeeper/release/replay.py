"""Replay records: a checked version's outputs on a sample of its task prompts, to reproduce after a restore.

``gatekeeper check`` writes one beside the version store,
``<adapters>/replays/<name>/v<N>-<manifest sha256>.jsonl``: a header (bundle,
manifest hash, the runtime's identity) and one line per prompt (request key,
messages, decoding, greedy output). Not in the report directory, which is
regenerated and cleaned; a record must outlive every report until its version
is no longer restored. Its sha256 goes into the store with the verdict, so
a rollback drill can tell a record that was edited from one that was not.
"""

from __future__ import annotations

import json
from pathlib import Path

from gatekeeper._util.files import write_atomic
from gatekeeper._util.hashing import sha256_file
from gatekeeper.errors import GatekeeperError
from gatekeeper.runtime.requests import Generate

DEFAULT_ITEMS = 16
REPLAY_SCHEMA_VERSION = 1


class ReplayError(GatekeeperError):
    pass


def sample(items: list, n: int) -> list:
    """``n`` items spread evenly over the set, always the same ones for the same set."""
    if n >= len(items):
        return list(items)
    return [items[k * len(items) // n] for k in range(n)]


def requests_for(bundle, n: int = DEFAULT_ITEMS) -> list[tuple[str, Generate]]:
    """The task requests a check asks for, on a sample of the eval set: (item id, request) pairs."""
    manifest = bundle.manifest
    return [(item.id, Generate(manifest.task.prompt.messages(item.input), manifest.decoding.max_new_tokens))
            for item in sample(bundle.golden["eval"], n)]


def record_path(bundle) -> Path:
    from gatekeeper.release.store import store_for

    manifest = bundle.manifest
    return store_for(bundle.root).parent / "replays" / manifest.name / f"v{manifest.version}-{bundle.manifest_sha256[:16]}.jsonl"


def write_record(bundle, runtime, n: int = DEFAULT_ITEMS) -> Path:
    """Ask the runtime for the adapter's answers, in one batch as a drill replays them, and write them."""
    pairs = requests_for(bundle, n)
    outputs = runtime.generate("adapter", [r for _, r in pairs])
    header = {"replay": REPLAY_SCHEMA_VERSION, "name": bundle.manifest.name, "version": bundle.manifest.version,
              "manifest_sha256": bundle.manifest_sha256, "runtime": runtime.identity("adapter")}
    lines = [header] + [
        {"id": item_id, "key": r.key, "messages": [list(m) for m in r.messages], "max_new_tokens": r.max_new_tokens,
         "output": output}
        for (item_id, r), output in zip(pairs, outputs)
    ]
    text = "".join(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n" for line in lines)
    return write_atomic(record_path(bundle), text)


def read_record(path: Path, sha256: str) -> tuple[dict, list[tuple[str, Generate, str]]]:
    """Header and (id, request, recorded output) triples, after checking the file against its registered hash."""
    if not path.is_file():
        raise ReplayError(f"replay record {path} is missing")
    found = sha256_file(path)
    if found != sha256:
        raise ReplayError(f"hash mismatch for {path.name}: registered {sha256[:12]}…, found {found[:12]}…")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    header, entries = lines[0], lines[1:]
    records = []
    for entry in entries:
        request = Generate(tuple(tuple(m) for m in entry["messages"]), entry["max_new_tokens"])
        if request.key != entry["key"]:
            raise ReplayError(f"{path.name}: entry {entry['id']} does not match its request key")
        records.append((entry["id"], request, entry["output"]))
    return header, records
