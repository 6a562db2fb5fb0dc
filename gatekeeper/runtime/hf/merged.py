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
from typing import Callable, NamedTuple

from gatekeeper._util.hashing import sha256_file
from gatekeeper.bundle.base import directory_weights_sha256
from gatekeeper.errors import RuntimeLoadError
from gatekeeper.runtime.hf.modeling import load_adapter, load_base_model
from gatekeeper.runtime.prompts import render
from gatekeeper.runtime.requests import (
    Divergence,
    DivergenceResult,
    ExportMerged,
    Progress,
)


class MergeSource(NamedTuple):
    """Where a merge starts from: the base's files, the adapter, and how the base is served."""

    base_path: Path
    adapter_dir: Path | None
    dtype: str
    device: str
    quantization: str


def build_merged(unmerged, source: MergeSource, request: Divergence):
    """A merged model for ``request``: ``unmerged`` (base + adapter) merged, or loaded from ``merged_from``."""
    if request.merged_from:
        return load_merged_dir(Path(request.merged_from), source)
    if source.adapter_dir is None:
        raise RuntimeLoadError("the merged side needs an adapter to merge")
    if source.quantization != "nf4":
        if request.variant == "requantized":
            raise RuntimeLoadError("a re-quantised merge needs a 4-bit (nf4) serving base")
        # A copy, so the unmerged adapter and the base side stay servable beside it.
        return copy.deepcopy(unmerged).merge_and_unload().eval()
    base = load_base_model(source.base_path, dtype=source.dtype, quantization="nf4", device=source.device)
    if request.variant == "merged":
        base = base.dequantize()
    return load_adapter(base, source.adapter_dir).merge_and_unload().eval()


def load_merged_dir(path: Path, source: MergeSource):
    """A merged model written elsewhere: a Hugging Face directory with safetensors weights only."""
    if not path.is_dir():
        raise RuntimeLoadError(f"merged model {path} is not a directory")
    directory_weights_sha256(path)  # refuses a directory without config.json or with pickled weights only
    return load_base_model(path, dtype=source.dtype, quantization="none", device=source.device).eval()


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


def divergence(unmerged, merged_for: Callable[[Divergence], object], tokenizer, requests: list[Divergence],
               progress: Progress | None = None) -> list[DivergenceResult]:
    """Each request's merged model (``merged_for``) against the unmerged adapter, on the adapter's continuation."""
    import torch

    device = unmerged.device
    references: dict[tuple, list[int]] = {}  # both variants of one prompt share the adapter's continuation
    results = []
    with torch.inference_mode():
        for request in requests:
            merged = merged_for(request)
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


def export(merged, tokenizer, requests: list[ExportMerged], progress: Progress | None = None) -> list[dict]:
    """Write the merged model and its tokenizer (safetensors only); each file's sha256 is the answer."""
    hashes = []
    for request in requests:
        target = Path(request.directory)
        merged.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        files = {p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file() and p.name != "SHA256SUMS"}
        (target / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in files.items()), encoding="utf-8")
        hashes.append(files)
        if progress:
            progress(1)
    return hashes
