"""Full-weight candidates as changed tensors: written by the trainer, swapped in by the runtime.

A method that trains the base's own weights (GaLore) ships only the tensors
that changed, as ``delta.safetensors``: ``trained - base`` for kind
``delta``, the trained values for kind ``full``. The file's metadata pins the
base's sha256, so a delta is never applied to another base.

The runtime keeps one model in memory. For each changed parameter it holds
the base tensor and the candidate tensor and points the parameter's
``.data`` at one or the other: switching sides is exact (no add and
subtract that would round) and never reloads the base from disk.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from gatekeeper.errors import RuntimeLoadError

DELTA_FILE = "delta.safetensors"
FORMAT = "gatekeeper-delta/1"
# safetensors keeps metadata in a hash map whose order changes from run to run: one key
# holding canonical JSON keeps the file byte-identical for identical weights.
META_KEY = "gatekeeper"


def metadata_for(kind: str, base_sha256: str) -> dict[str, str]:
    import json

    return {META_KEY: json.dumps({"format": FORMAT, "kind": kind, "base_sha256": base_sha256}, sort_keys=True)}


def read_base_tensors(base_dir: Path, names: list[str]) -> dict:
    """The named tensors straight from the base's safetensors files (memory-mapped, one at a time)."""
    from safetensors import safe_open

    wanted, found = set(names), {}
    for path in sorted(base_dir.glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            for key in wanted.intersection(handle.keys()):
                found[key] = handle.get_tensor(key)
    missing = sorted(wanted - found.keys())
    if missing:
        raise RuntimeLoadError(f"base {base_dir} has no tensor {missing[0]} in its safetensors files")
    return found


def write_delta(model, names: list[str], base_dir: Path, base_sha256: str, out_dir: Path) -> dict[str, int]:
    """Write ``trained - base`` for every named parameter that changed; returns counts for the record."""
    import torch
    from safetensors.torch import save_file

    params = dict(model.named_parameters())
    base = read_base_tensors(base_dir, names)
    delta, elements = {}, 0
    for name in sorted(names):
        difference = params[name].detach().float().cpu() - base[name].float()
        if bool(torch.any(difference != 0)):
            delta[name] = difference.contiguous()
            elements += difference.numel()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(delta, out_dir / DELTA_FILE, metadata=metadata_for("delta", base_sha256))
    return {"changed_tensors": len(delta), "unchanged_tensors": len(names) - len(delta), "delta_elements": elements}


class WeightSwap:
    """Candidate values for some parameters of a loaded model, swapped in through ``.data`` on demand."""

    def __init__(self, model, adapter_dir: Path, kind: str, base_sha256: str):
        import json

        from safetensors import safe_open

        path = adapter_dir / DELTA_FILE
        if not path.is_file():
            raise RuntimeLoadError(f"adapter {adapter_dir} has no {DELTA_FILE}")
        by_name = dict(model.named_parameters(remove_duplicate=False))  # tied weights answer to either name
        self._pairs: list[tuple[object, object, object]] = []  # (parameter, base tensor, candidate tensor)
        with safe_open(path, framework="pt") as handle:
            try:
                meta = json.loads((handle.metadata() or {})[META_KEY])
            except (KeyError, ValueError):
                meta = {}
            if meta.get("format") != FORMAT or meta.get("kind") != kind:
                raise RuntimeLoadError(f"{path}: not a gatekeeper {kind} file (metadata {meta})")
            if meta.get("base_sha256") != base_sha256:
                raise RuntimeLoadError(f"{path}: made for base {meta.get('base_sha256', '?')[:12]}…, not {base_sha256[:12]}…")
            seen: set[int] = set()
            for name in sorted(handle.keys()):
                param = by_name.get(name)
                if param is None:
                    raise RuntimeLoadError(f"{path}: tensor {name} is not a parameter of the base")
                if id(param) in seen:
                    raise RuntimeLoadError(f"{path}: {name} is tied to a tensor already in the file")
                seen.add(id(param))
                stored = handle.get_tensor(name)
                if tuple(stored.shape) != tuple(param.shape):
                    raise RuntimeLoadError(f"{path}: {name} has shape {tuple(stored.shape)}, the base {tuple(param.shape)}")
                stored = stored.to(param.device)
                # Add in float32 and round once to the serving dtype.
                value = param.data.float() + stored.float() if kind == "delta" else stored
                self._pairs.append((param, param.data, value.to(param.dtype)))

    def __len__(self) -> int:
        return len(self._pairs)

    @contextlib.contextmanager
    def applied(self):
        """The candidate's weights inside the block, the base's again afterwards (even on error)."""
        for param, _, candidate in self._pairs:
            param.data = candidate
        try:
            yield
        finally:
            for param, base, _ in self._pairs:
                param.data = base
