"""The merged side: the adapter folded into a copy of the base, and how far it drifts from the unmerged adapter.

Many deployments ship the merged model (no adapter arithmetic per token), so it
must behave like base + adapter. Merging only reorders arithmetic, W x + s·B(A x)
becoming (W + s·BA) x, so in full precision the two differ by rounding alone.
A QLoRA adapter was trained over a 4-bit base; its merge goes into the
de-quantised base (the very weights the 4-bit layers compute with), and the
``requantized`` variant is that merge quantised to 4-bit again, as peft does
when merging into 4-bit layers, which rounds the update away in part.

Comparisons run both models on the same token sequence: the prompt and the
unmerged adapter's greedy continuation. Only summary numbers leave this module.
"""

from __future__ import annotations

import copy
from pathlib import Path

from gatekeeper.errors import RuntimeLoadError
from gatekeeper.runtime.requests import Divergence, DivergenceResult, ExportMerged, Progress, Side


def build_merged(runtime, request: Divergence):
    """A merged model for ``request``: merged here from the runtime's own files, or loaded from ``merged_from``."""
    from gatekeeper.runtime.hf.runtime import load_adapter
    from gatekeeper.runtime.hf.modeling import load_base_model

    if request.merged_from:
        return load_merged_dir(Path(request.merged_from), runtime)
    if runtime.adapter_dir is None:
        raise RuntimeLoadError("the merged side needs an adapter to merge")
    if runtime.quantization != "nf4":
        if request.variant == "requantized":
            raise RuntimeLoadError("a re-quantised merge needs a 4-bit (nf4) serving base")
        # A copy, so the unmerged adapter and the base side stay servable beside it.
        return copy.deepcopy(runtime.model).merge_and_unload().eval()
    base = load_base_model(runtime.base.path, dtype=runtime.dtype_name, quantization="nf4", device=runtime.device_name)
    if request.variant == "merged":
        base = base.dequantize()
    return load_adapter(base, runtime.adapter_dir).merge_and_unload().eval()


def load_merged_dir(path: Path, runtime):
    """A merged model written elsewhere: a Hugging Face directory with safetensors weights only."""
    from gatekeeper.bundle.base import directory_weights_sha256
    from gatekeeper.runtime.hf.modeling import load_base_model

    if not path.is_dir():
        raise RuntimeLoadError(f"merged model {path} is not a directory")
    directory_weights_sha256(path)  # refuses a directory without config.json or with pickled weights only
    return load_base_model(path, dtype=runtime.dtype_name, quantization="none", device=runtime.device_name).eval()


def _greedy(model, prompt, max_new_tokens: int, tokenizer) -> list[int]:
    """One prompt, no padding: the merged and unmerged models take exactly the same path."""
    generated = model.generate(
        input_ids=prompt, attention_mask=prompt.new_ones(prompt.shape), do_sample=False,
        max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return generated[0, prompt.shape[1]:].tolist()


def _next_token_logits(model, sequence, positions: int):
    """Logits at the last ``positions + 1`` places but the final one: those that predict the continuation."""
    logits = model(input_ids=sequence, attention_mask=sequence.new_ones(sequence.shape), logits_to_keep=positions + 1).logits
    return logits[0, :-1].float()


def compare(reference, candidate):
    """Summary of two [positions, vocab] logit tensors; KL is KL(reference || candidate).

    In float64: a KL of two distributions this close is far below float32's
    rounding noise summed over a 49k vocabulary, which would swamp it.
    """
    import torch.nn.functional as F

    reference, candidate = reference.double(), candidate.double()
    ref_logp, cand_logp = F.log_softmax(reference, -1), F.log_softmax(candidate, -1)
    kl = (ref_logp.exp() * (ref_logp - cand_logp)).sum(-1).clamp_min(0)
    return {
        "max_abs_logit_diff": float((reference - candidate).abs().max()),
        "max_rel_logit_diff": float(((reference - candidate).abs() / (1 + reference.abs())).max()),
        "max_prob_diff": float((ref_logp.exp() - cand_logp.exp()).abs().max()),
        "max_kl": float(kl.max()),
        "mean_kl": float(kl.mean()),
        "top1_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).float().mean()),
    }


def divergence(runtime, side: Side, requests: list[Divergence], progress: Progress | None = None) -> list[DivergenceResult]:
    import torch

    from gatekeeper.runtime.hf.runtime import render

    if side != "merged":
        raise ValueError(f"divergence is measured on the merged side, not {side!r}")
    tokenizer, unmerged = runtime.tokenizer, runtime.model
    device = unmerged.device
    references: dict[tuple, list[int]] = {}  # both variants of one prompt share the adapter's continuation
    results = []
    with torch.inference_mode():
        for request in requests:
            merged = runtime.merged_model(request)
            prompt = tokenizer(render(tokenizer, request.messages), return_tensors="pt", add_special_tokens=False)
            prompt = prompt["input_ids"].to(device)
            key = (request.messages, request.max_new_tokens)
            if key not in references:
                references[key] = _greedy(unmerged, prompt, request.max_new_tokens, tokenizer)
            reference = references[key]
            mine = _greedy(merged, prompt.to(merged.device), request.max_new_tokens, tokenizer)
            sequence = torch.cat([prompt, torch.tensor([reference], device=device)], dim=1)
            stats = compare(_next_token_logits(unmerged, sequence, len(reference)),
                            _next_token_logits(merged, sequence.to(merged.device), len(reference)).to(device))
            results.append(DivergenceResult(
                output=tokenizer.decode(mine, skip_special_tokens=True),
                reference_output=tokenizer.decode(reference, skip_special_tokens=True),
                positions=len(reference), **stats,
            ))
            if progress:
                progress(1)
    return results


def export(runtime, side: Side, requests: list[ExportMerged], progress: Progress | None = None) -> list[dict]:
    """Write the merged model and its tokenizer (safetensors only); each file's sha256 is the answer."""
    from gatekeeper._util.hashing import sha256_file

    if side != "merged":
        raise ValueError(f"only the merged side is exported, not {side!r}")
    hashes = []
    for request in requests:
        target = Path(request.directory)
        # Over a 4-bit base this is the merge into the de-quantised weights: full precision, loadable anywhere.
        runtime.merged_model(Divergence(())).save_pretrained(target, safe_serialization=True)
        runtime.tokenizer.save_pretrained(target)
        files = {p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file() and p.name != "SHA256SUMS"}
        (target / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in files.items()), encoding="utf-8")
        hashes.append(files)
        if progress:
            progress(1)
    return hashes
