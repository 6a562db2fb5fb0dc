"""The Hugging Face runtime: one base model in memory, the adapter toggled on and off.

The base side is scored inside peft's ``disable_adapter()`` on the very model
that carries the adapter, so both sides share weights, tokenizer, chat
template, padding and decoding; the base is never loaded twice. A full-weight
candidate (GaLore's delta) is served the same way: its changed tensors are
swapped into the one loaded base for the adapter side (see ``delta.py``).
"""

from __future__ import annotations

import collections
import contextlib
from pathlib import Path

from gatekeeper.bundle.base import ResolvedBase, serving_profile, tokenizer_fingerprint
from gatekeeper.errors import RuntimeLoadError
from gatekeeper.runtime.hf import merged, modeling, timing
from gatekeeper.runtime.hf.modeling import (
    MIN_SHARED_PREFIX,
    load_adapter,
    pick_device,
    resolve_dtype,
)
from gatekeeper.runtime.prompts import (
    context_ids,
    example_lengths,
    load_tokenizer,
    render,
)
from gatekeeper.runtime.protocol import Capabilities
from gatekeeper.runtime.requests import (
    Choose,
    CountTokens,
    Divergence,
    Generate,
    LogLik,
    LogLikResult,
    Progress,
    Side,
)

BOTH = frozenset({"base", "adapter"})


class HFRuntime:
    """The reference runtime: every request kind, base and adapter sides, and the merged side beside them."""

    name = "hf"

    def __init__(
        self,
        base: ResolvedBase,
        adapter_dir: Path | None,
        adapter_sha256: str | None,
        *,
        device: str = "auto",
        dtype: str = "float32",
        quantization: str = "none",
        batch_size: int = 64,
        adapter_kind: str = "lora",
    ):
        self.base, self.adapter_dir, self.adapter_sha256 = base, adapter_dir, adapter_sha256
        self.adapter_kind = adapter_kind
        self._swap = None  # the candidate's tensors when the adapter is a delta or full weights
        # resolved now: the cache keys and the verdict name the dtype that really ran
        self.device_name, self.dtype_name, self.batch_size = device, resolve_dtype(dtype, pick_device(device)), batch_size
        self.quantization = quantization
        self._model = None
        self._tokenizer = None
        self._fingerprint: dict[str, str] | None = None

    # -- identity: computable without loading the model --------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.base.path)
        return self._tokenizer

    def fingerprint(self) -> dict[str, str]:
        if self._fingerprint is None:
            self._fingerprint = tokenizer_fingerprint(self.tokenizer)
        return self._fingerprint

    def profile(self) -> dict:
        """The chat template, special and stop tokens this runtime serves with."""
        return serving_profile(self.tokenizer)

    def capabilities(self) -> Capabilities:
        merged_side = frozenset({"merged"}) if self.adapter_dir is not None else frozenset()
        why = {} if merged_side else {k: "there is no adapter to merge" for k in ("divergence", "export")}
        # The reference_* sides exist only beside a serving engine (runtime.reference): here the
        # check runs on the reference itself, and a gate comparing the two says so when it is skipped.
        return Capabilities({
            "generate": BOTH, "loglik": BOTH, "choose": BOTH, "tokens": BOTH,
            "timing": BOTH | merged_side, "divergence": merged_side, "export": merged_side,
        }, why)

    def identity(self, side: Side) -> dict:
        import torch  # deferred: building a runtime and its cache key must not pay for importing torch
        import transformers

        identity = {
            "runtime": "hf-transformers",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "device": pick_device(self.device_name).type,
            "dtype": self.dtype_name,
            "quantization": self.quantization,
            "base_sha256": self.base.sha256,
            **self.fingerprint(),
            "side": "base" if side == "base" else side,
        }
        if side != "base":
            identity["adapter_sha256"] = self.adapter_sha256
        return identity

    # -- loading ------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self):
        if self.adapter_kind != "lora" and self.quantization != "none":
            raise RuntimeLoadError(f"a {self.adapter_kind} adapter replaces full-precision weights; "
                                   f"it cannot be served over a {self.quantization} base")
        model = modeling.load_base_model(self.base.path, dtype=self.dtype_name, quantization=self.quantization, device=self.device_name)
        if self.adapter_dir is not None and self.adapter_kind != "lora":
            from gatekeeper.runtime.hf.delta import WeightSwap

            self._swap = WeightSwap(model, self.adapter_dir, self.adapter_kind, self.base.sha256)
        elif self.adapter_dir is not None:
            model = load_adapter(model, self.adapter_dir)
        return model.eval()

    def on_side(self, side: Side):
        """Context manager that puts the model on the requested side (base or adapter)."""
        model = self.model  # loading decides whether there is a weight swap
        if self._swap is not None and side in ("adapter", "base"):
            # the model holds the base's weights between calls; the candidate's only inside the block
            return self._swap.applied() if side == "adapter" else contextlib.nullcontext()
        if side == "adapter":
            return contextlib.nullcontext()
        if side == "base":
            return model.disable_adapter() if self.adapter_dir is not None else contextlib.nullcontext()
        raise ValueError(f"side {side!r} is not served by this runtime")

    # -- requests -----------------------------------------------------------
    def generate(self, side: Side, requests: list[Generate], progress: Progress | None = None) -> list[str]:
        from gatekeeper.runtime.hf.decoding import greedy

        tokenizer, model = self.tokenizer, self.model
        rows = [tokenizer(render(tokenizer, r.messages), add_special_tokens=False)["input_ids"] for r in requests]
        outputs: list[str] = [""] * len(requests)
        with self.on_side(side):
            for budget in sorted({r.max_new_tokens for r in requests}):  # one token budget per decoding run
                chosen = [i for i, r in enumerate(requests) if r.max_new_tokens == budget]
                new_tokens = greedy(model, [rows[i] for i in chosen], budget, {tokenizer.eos_token_id},
                                    tokenizer.pad_token_id, batch_size=self.batch_size,
                                    finished=(lambda _: progress(1)) if progress else None)
                for i, ids in zip(chosen, new_tokens):
                    outputs[i] = tokenizer.decode(ids, skip_special_tokens=True)
        return outputs

    def loglik(self, side: Side, requests: list[LogLik], progress: Progress | None = None) -> list[LogLikResult]:
        import torch

        from gatekeeper.runtime.hf.fused import FusedLora
        from gatekeeper.runtime.hf.modeling import target_logprobs

        tokenizer, model = self.tokenizer, self.model
        rows = [(context_ids(tokenizer, r.messages), tokenizer(r.continuation, add_special_tokens=False)["input_ids"])
                for r in requests]
        lengths = [sum(map(len, row)) for row in rows]
        results: dict[int, LogLikResult] = {}
        with torch.inference_mode(), self.on_side(side), FusedLora(model):
            for indices in similar_rows_chunks([context for context, _ in rows], lengths, self.batch_size):
                chunk = [rows[i] for i in indices]
                width = max(len(c) + len(a) for c, a in chunk)
                ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
                mask = torch.zeros_like(ids)
                labels = torch.full_like(ids, -100)
                for j, (context, answer) in enumerate(chunk):  # right padding: positions stay 0..n
                    n = len(context) + len(answer)
                    ids[j, :n] = torch.tensor(context + answer)
                    mask[j, :n] = 1
                    labels[j, len(context) : n] = torch.tensor(answer)
                device = model.device
                chosen, is_top, owner = target_logprobs(model, ids.to(device), mask.to(device), labels.to(device))
                for j, (index, (_, answer)) in enumerate(zip(indices, chunk)):
                    mine = owner == j
                    results[index] = LogLikResult(float(chosen[mine].sum()), len(answer), bool(is_top[mine].all()))
                if progress:
                    progress(len(chunk))
        return [results[i] for i in range(len(rows))]

    def choose(self, side: Side, requests: list[Choose], progress: Progress | None = None) -> list[list[float]]:
        """Each option's summed log-probability after each prompt, options tokenized as training writes answers."""
        from gatekeeper.runtime.hf.decoding import option_logprobs
        from gatekeeper.runtime.hf.fused import FusedLora

        tokenizer, model = self.tokenizer, self.model
        rows = [tokenizer(render(tokenizer, r.messages), add_special_tokens=False)["input_ids"] for r in requests]
        results: list[list[float]] = [[] for _ in requests]
        with self.on_side(side), FusedLora(model):
            for options in dict.fromkeys(r.options for r in requests):  # each closed set, in first-seen order
                encoded = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
                same = [i for i, r in enumerate(requests) if r.options == options]
                most = max(1, self.batch_size // len(options))  # each prompt runs once per option in the second pass
                for picked in similar_rows_chunks([rows[i] for i in same], [len(rows[i]) for i in same], most):
                    chunk = [same[k] for k in picked]
                    scores = option_logprobs(model, [rows[i] for i in chunk], encoded, tokenizer.pad_token_id)
                    for i, row in zip(chunk, scores.tolist()):
                        results[i] = row
                    if progress:
                        progress(len(chunk))
        return results

    def count_tokens(self, side: Side, requests: list[CountTokens], progress: Progress | None = None) -> list[int]:
        """Example lengths in tokens, for any side: it takes the tokenizer, never the weights."""
        counts = example_lengths(self.tokenizer, requests)
        if progress:
            progress(len(requests))
        return counts

    # -- the merged side and measurements (merged.py, timing.py) ----------
    def merged_model(self, request: Divergence):
        """The adapter merged into a copy of the base, built on first use: only a gate that asks pays for it."""
        built = self.__dict__.setdefault("_merged", {})
        which = (request.variant, request.merged_from, request.merged_sha256)
        if which not in built:
            source = merged.MergeSource(self.base.path, self.adapter_dir, self.dtype_name, self.device_name,
                                        self.quantization)
            built[which] = merged.build_merged(self.model, source, request)
        return built[which]

    def divergence(self, side: Side, requests: list[Divergence], progress: Progress | None = None) -> list:
        """``Divergence`` requests, answered on the merged side against the unmerged adapter."""
        if side != "merged":
            raise ValueError(f"divergence is measured on the merged side, not {side!r}")
        return merged.divergence(self.model, self.merged_model, self.tokenizer, requests, progress)

    def export_merged(self, side: Side, requests: list, progress: Progress | None = None) -> list:
        """``ExportMerged`` requests: the merged model written as safetensors, answered with file hashes."""
        if side != "merged":
            raise ValueError(f"only the merged side is exported, not {side!r}")
        # Over a 4-bit base this is the merge into the de-quantised weights: full precision, loadable anywhere.
        return merged.export(self.merged_model(Divergence(())), self.tokenizer, requests, progress)

    def timing(self, side: Side, requests: list, progress: Progress | None = None) -> list:
        """``Timing`` requests: measured now, on this runtime's device, never cached."""
        if side == "merged":
            # Over a 4-bit base the merge is served re-quantised, at the footprint the adapter was trained in.
            variant = "requantized" if self.quantization == "nf4" else "merged"
            model, placed = self.merged_model(Divergence((), variant=variant)), contextlib.nullcontext()
        else:
            model, placed = self.model, self.on_side(side)  # a merged model is built before any clock starts
        return timing.measure(model, placed, self.tokenizer, requests, progress)


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def template_groups(contexts: list[list[int]]) -> list[int]:
    """A group number per row: rows whose contexts share a prefix at least ``MIN_SHARED_PREFIX``
    tokens longer than the one all rows share (one prompt template) get a number of their own;
    rows sharing no such prefix with another row all get -1."""
    everyone = min((_common(contexts[0], c) for c in contexts), default=0)
    heads: list[int] = []  # the first row of each group
    group = []
    for i, context in enumerate(contexts):
        k = next((k for k, h in enumerate(heads) if _common(contexts[h], context) >= everyone + MIN_SHARED_PREFIX), None)
        if k is None:
            heads.append(i)
            k = len(heads) - 1
        group.append(k)
    sizes = collections.Counter(group)
    return [k if sizes[k] > 1 else -1 for k in group]


def similar_rows_chunks(contexts: list[list[int]], lengths: list[int], most: int) -> list[list[int]]:
    """Row indices in chunks of at most ``most`` rows to run as one padded batch: rows of one
    template together (they share its prefix, which runs once per chunk), shortest first, and a
    chunk cut early where padding to its longest row would waste over a quarter of its tokens.

    94 log-likelihood rows in one chunk took 2.4 times as long as in two: the rows of other
    templates shrank the prefix the chunk shared to the chat template's system turn.
    """
    groups = template_groups(contexts)
    order = sorted(range(len(contexts)), key=lambda i: (groups[i] < 0, groups[i], lengths[i]))
    chunks: list[list[int]] = []
    chunk: list[int] = []
    tokens = 0  # the chunk's unpadded length; within a group, row i is the chunk's longest yet
    for i in order:
        if chunk and (len(chunk) == most or groups[i] != groups[chunk[0]]
                      or (len(chunk) + 1) * lengths[i] > 1.25 * (tokens + lengths[i])):
            chunks.append(chunk)
            chunk, tokens = [], 0
        chunk.append(i)
        tokens += lengths[i]
    return chunks + ([chunk] if chunk else [])
