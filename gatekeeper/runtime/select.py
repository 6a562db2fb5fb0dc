"""The runtime a bundle is checked on: named by its ``serving`` section, set up with no weights loaded yet."""

from __future__ import annotations

import pydantic

from gatekeeper._util.documents import validation_problem
from gatekeeper._util.hashing import sha256_json
from gatekeeper.bundle.base import ResolvedBase, resolve_base
from gatekeeper.bundle.loading import LoadedBundle
from gatekeeper.bundle.manifest import Serving
from gatekeeper.errors import BundleError
from gatekeeper.runtime.openai import OpenAIRuntime
from gatekeeper.runtime.protocol import Runtime
from gatekeeper.runtime.reference import WithReference


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


def with_overrides(serving: Serving, overrides: dict) -> Serving:
    """The bundle's serving section with command-line settings on top (``runtime``, ``openai.*``, ``device``)."""
    data = serving.model_dump(mode="json", exclude_none=True)
    openai = {k.removeprefix("openai."): v for k, v in overrides.items() if k.startswith("openai.") and v is not None}
    if openai:
        data["openai"] = (data.get("openai") or {}) | openai
    data |= {k: v for k, v in overrides.items() if "." not in k and v is not None}
    try:
        return Serving.model_validate(data)
    except pydantic.ValidationError as exc:
        raise BundleError(f"serving settings: {validation_problem(exc)}") from None


def open_runtime(bundle: LoadedBundle, base: ResolvedBase, *, device: str | None = None,
                 serving: Serving | None = None) -> Runtime:
    """The runtime ``serving`` (by default the bundle's own section) names, set up with no weights loaded.

    A serving engine is reached now (an unreachable endpoint or an unknown model name is one line,
    before any gate runs) and comes with the ``hf`` reference beside it for the ``reference_*`` sides.
    """
    from gatekeeper.runtime.hf.runtime import (
        HFRuntime,  # deferred: it imports torch, which a data-only check never needs
    )

    manifest = bundle.manifest
    serving = serving or manifest.serving
    reference = HFRuntime(
        base, bundle.adapter_dir, adapter_sha256(bundle),
        device=device or serving.device, dtype=serving.dtype, quantization=serving.quantization,
        batch_size=serving.batch_size, adapter_kind=manifest.adapter.kind,
    )
    if serving.runtime == "hf":
        return reference
    if manifest.adapter.kind != "lora":
        raise BundleError(f"runtime {serving.runtime!r} serves peft adapters; this bundle's adapter is "
                          f"{manifest.adapter.kind!r} (full weights): check it on the hf runtime")
    if serving.runtime == "openai":
        engine = OpenAIRuntime(serving.openai, base)
    else:
        from gatekeeper.runtime.vllm import (
            VLLMRuntime,  # deferred: vLLM is an optional, GPU-side install
        )

        engine = VLLMRuntime(serving.vllm, base, bundle.adapter_dir, adapter_sha256(bundle), dtype=serving.dtype)
    engine.connect()
    return WithReference(engine, reference)
