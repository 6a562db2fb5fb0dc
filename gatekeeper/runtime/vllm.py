"""The ``vllm`` runtime: vLLM's engine in this process, the adapter through ``LoRARequest``.

For GPUs: a base that outgrows one is gated on the engine that serves it across
several, through vLLM's own ``tensor_parallel_size`` and
``pipeline_parallel_size``, not a home-made sharding scheme. The base side is
the engine with no LoRA request, the adapter side the same engine with one, so
both share weights and the scheduler, as a ``vllm serve --enable-lora`` would.
Prompts are rendered here by the base's chat template
(``gatekeeper.runtime.prompts``) and sent as token ids, and log-likelihoods come
from ``prompt_logprobs``. vLLM is not a dependency of gatekeeper: install it
beside it on the GPU machine (``pip install vllm``).
"""

from __future__ import annotations

from pathlib import Path

from gatekeeper.bundle.base import ResolvedBase
from gatekeeper.bundle.manifest import VLLMServing
from gatekeeper.errors import MissingDependency, RuntimeLoadError
from gatekeeper.runtime.prompts import (
    TokenizerOnlyRequests,
    context_ids,
    load_tokenizer,
)
from gatekeeper.runtime.protocol import Capabilities
from gatekeeper.runtime.requests import (
    Choose,
    Generate,
    LogLik,
    LogLikResult,
    Progress,
    Side,
)

SIDES = frozenset({"base", "adapter"})
NOT_HERE = "measured on the hf runtime (gatekeeper check without --runtime)"


class VLLMRuntime(TokenizerOnlyRequests):
    name = "vllm"

    def __init__(self, settings: VLLMServing, base: ResolvedBase, adapter_dir: Path, adapter_sha256: str, *,
                 dtype: str = "auto"):
        self.settings, self.base, self.adapter_dir, self.adapter_sha256 = settings, base, adapter_dir, adapter_sha256
        self.dtype_name = dtype  # vLLM's own names; Serving.dtype allows no others
        self._engine = None
        self._tokenizer = None
        self._version = ""

    def connect(self) -> None:
        """vLLM importable and a GPU present: said now, before any gate runs; the engine starts on first use."""
        try:
            import vllm
        except ImportError:
            raise MissingDependency("vllm", "the vllm runtime") from None
        import torch

        if not torch.cuda.is_available():
            raise RuntimeLoadError("runtime 'vllm' runs vLLM's engine on a GPU and this machine has none; "
                                   "serve with vLLM's CPU build and check with --runtime openai instead")
        self._version = vllm.__version__

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.base.path)
        return self._tokenizer

    @property
    def engine(self):
        if self._engine is None:
            from vllm import LLM

            s = self.settings
            self._engine = LLM(
                model=str(self.base.path), tokenizer=str(self.base.path), dtype=self.dtype_name,
                enable_lora=True, max_lora_rank=s.max_lora_rank, max_loras=1,
                tensor_parallel_size=s.tensor_parallel_size, pipeline_parallel_size=s.pipeline_parallel_size,
                gpu_memory_utilization=s.gpu_memory_utilization, max_model_len=s.max_model_len,
                trust_remote_code=False, seed=0,
            )
        return self._engine

    def capabilities(self) -> Capabilities:
        why = {k: f"the vllm runtime does not serve it: {NOT_HERE}" for k in ("divergence", "export", "timing")}
        return Capabilities({k: SIDES for k in ("generate", "loglik", "choose", "tokens")}, why)

    def identity(self, side: Side) -> dict:
        identity = {"runtime": "vllm", "vllm": self._version, "dtype": self.dtype_name, "base_sha256": self.base.sha256,
                    "tensor_parallel_size": self.settings.tensor_parallel_size,
                    "pipeline_parallel_size": self.settings.pipeline_parallel_size, "side": side}
        if side == "adapter":
            identity["adapter_sha256"] = self.adapter_sha256
        return identity

    def profile(self) -> dict | None:
        return None  # the template is the base's own, rendered here; template_drift reads the hf profile

    def _lora(self, side: Side):
        if side not in SIDES:
            raise ValueError(f"side {side!r} is not served by the vllm runtime")
        if side == "base":
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest("candidate", 1, str(self.adapter_dir))

    def _run(self, prompts: list[list[int]], params, side: Side):
        from vllm.inputs import TokensPrompt

        return self.engine.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                    lora_request=self._lora(side), use_tqdm=False)

    def generate(self, side: Side, requests: list[Generate], progress: Progress | None = None) -> list[str]:
        from vllm import SamplingParams

        outputs: list[str] = [""] * len(requests)
        for budget in sorted({r.max_new_tokens for r in requests}):
            chosen = [i for i, r in enumerate(requests) if r.max_new_tokens == budget]
            params = SamplingParams(temperature=0.0, max_tokens=budget, skip_special_tokens=True)
            for i, done in zip(chosen, self._run([context_ids(self.tokenizer, requests[i].messages) for i in chosen], params, side)):
                outputs[i] = done.outputs[0].text
            if progress:
                progress(len(chosen))
        return outputs

    def _scored(self, side: Side, rows: list[tuple[list[int], list[int]]]) -> list[LogLikResult]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1)
        results = []
        for (context, continuation), done in zip(rows, self._run([c + a for c, a in rows], params, side)):
            positions = done.prompt_logprobs[len(context):]
            total, greedy = 0.0, True
            for token, scores in zip(continuation, positions):
                total += scores[token].logprob
                greedy &= scores[token].rank == 1
            results.append(LogLikResult(total, len(continuation), greedy))
        return results

    def loglik(self, side: Side, requests: list[LogLik], progress: Progress | None = None) -> list[LogLikResult]:
        tokenizer = self.tokenizer
        rows = [(context_ids(tokenizer, r.messages), tokenizer(r.continuation, add_special_tokens=False)["input_ids"]) for r in requests]
        results = self._scored(side, rows)
        if progress:
            progress(len(requests))
        return results

    def choose(self, side: Side, requests: list[Choose], progress: Progress | None = None) -> list[list[float]]:
        tokenizer = self.tokenizer
        rows, owners = [], []
        for index, r in enumerate(requests):
            context = context_ids(tokenizer, r.messages)
            for option in r.options:
                rows.append((context, tokenizer(option, add_special_tokens=False)["input_ids"]))
                owners.append(index)
        results: list[list[float]] = [[] for _ in requests]
        for owner, scored in zip(owners, self._scored(side, rows)):
            results[owner].append(scored.logprob)
        if progress:
            progress(len(requests))
        return results
