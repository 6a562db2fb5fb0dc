"""The runtime a bundle is checked on: named by its ``serving`` section, set up with no weights loaded yet."""

from __future__ import annotations

from gatekeeper._util.hashing import sha256_json
from gatekeeper.bundle.base import ResolvedBase, resolve_base
from gatekeeper.bundle.loading import LoadedBundle
from gatekeeper.errors import BundleError
from gatekeeper.runtime.protocol import Runtime


def adapter_sha256(bundle: LoadedBundle) -> str:
    return sha256_json(bundle.manifest.adapter.files)


def bundle_base(bundle: LoadedBundle) -> ResolvedBase:
    """The base the bundle names, refused unless it is the one the adapter was trained on."""
    manifest = bundle.manifest
    base = resolve_base(manifest.base.ref, relative_to=bundle.root)
    if base.sha256 != manifest.base.sha256:
        raise BundleError(
            f"adapter was trained for base sha256 {manifest.base.sha256[:12]}…, "
            f"but {manifest.base.ref!r} is {base.sha256[:12]}…"
        )
    return base


def open_runtime(bundle: LoadedBundle, base: ResolvedBase, *, device: str | None = None) -> Runtime:
    """The runtime for ``bundle`` on ``base``; loading its weights waits for the first request."""
    from gatekeeper.runtime.hf.runtime import (
        HFRuntime,  # deferred: it imports torch, which a data-only check never needs
    )

    manifest, serving = bundle.manifest, bundle.manifest.serving
    return HFRuntime(
        base, bundle.adapter_dir, adapter_sha256(bundle),
        device=device or serving.device, dtype=serving.dtype, quantization=serving.quantization,
        batch_size=serving.batch_size, adapter_kind=manifest.adapter.kind,
    )
