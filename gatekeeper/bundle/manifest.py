"""The bundle: ``bundle.yaml`` and the files it names, each with its sha256.

A bundle is what a check judges and what a release ships: the base reference
and its hash, the peft adapter (safetensors), tokenizer and chat-template
hashes, the task's contract and prompt, the golden sets, and the gates to run
with their parameters. ``load_bundle`` verifies every hash before any model is
touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gatekeeper.bundle.base import PICKLED_SUFFIXES
from gatekeeper.errors import BundleError, GatekeeperError
from gatekeeper.bundle.goldens import Contract, GoldenItem, load_jsonl
from gatekeeper._util.hashing import sha256_file
from gatekeeper.runtime.requests import Messages, messages_for

MANIFEST = "bundle.yaml"
BUNDLE_SCHEMA_VERSION = 1


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileRef(_Doc):
    path: str
    """Relative to the bundle directory."""
    sha256: str


class BaseRef(_Doc):
    ref: str
    """A built-in alias (``smollm2-135m-instruct``) or a local model directory."""
    sha256: str
    """The base the adapter was trained on: GGUF hash for an alias, config and weights for a directory."""
    tokenizer_sha256: str
    chat_template_sha256: str


AdapterKind = Literal["lora", "delta", "full"]
FULL_WEIGHT_METHODS = ("galore",)  # methods that change the base's own weights rather than add a peft adapter


class AdapterRef(_Doc):
    path: str = "adapter"
    """The adapter directory: a peft adapter (adapter_config.json, adapter_model.safetensors) for kind
    ``lora``; ``delta.safetensors`` for kinds ``delta`` and ``full``."""
    method: Literal["lora", "qlora", "dora", "galore"] = "lora"
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


class PromptTemplate(_Doc):
    """How an item's input becomes chat messages, for training and evaluation alike."""

    system: str | None = None
    user: str = "{input}"

    def messages(self, text: str) -> Messages:
        return messages_for(self.user.replace("{input}", text), self.system)


class TaskSpec(_Doc):
    contract: FileRef
    """JSON Schema every answer must keep."""
    prompt: PromptTemplate = Field(default_factory=PromptTemplate)


class Decoding(_Doc):
    max_new_tokens: int = Field(64, gt=0, le=4096)


class Serving(_Doc):
    """Where and how the candidate will be served; gates measure on this."""

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


class GateSpec(_Doc):
    name: str
    required: bool = True
    """A required gate that fails fails the check; an advisory gate is reported only."""
    params: dict[str, Any] = Field(default_factory=dict)


class Bundle(_Doc):
    schema_version: Literal[1] = BUNDLE_SCHEMA_VERSION
    name: str
    version: int = Field(ge=0)
    base: BaseRef
    adapter: AdapterRef
    task: TaskSpec
    golden_sets: dict[str, FileRef]
    """Name -> file. ``eval`` is the evaluation split; ``train`` the training data."""
    gates: list[GateSpec]
    decoding: Decoding = Field(default_factory=Decoding)
    serving: Serving = Field(default_factory=Serving)
    recipe: FileRef | None = None
    training: FileRef | None = None
    """The training record (JSON), when the bundle came from gatekeeper's trainer."""
    serving_profile: FileRef | None = None
    """Chat template, special and stop tokens the adapter was trained with (JSON)."""

    def file_refs(self) -> list[FileRef]:
        refs = [self.task.contract, *self.golden_sets.values()]
        refs += [FileRef(path=f"{self.adapter.path}/{n}", sha256=h) for n, h in sorted(self.adapter.files.items())]
        refs += [r for r in (self.recipe, self.training, self.serving_profile) if r is not None]
        return refs


@dataclass
class LoadedBundle:
    root: Path
    manifest: Bundle
    manifest_sha256: str
    contract: Contract
    golden: dict[str, list[GoldenItem]]

    @property
    def adapter_dir(self) -> Path:
        return self.root / self.manifest.adapter.path

    def path(self, ref: FileRef) -> Path:
        return self.root / ref.path


def describe_validation_error(exc: pydantic.ValidationError, source: str) -> str:
    """The first problem pydantic found, as one line naming the field."""
    problem = exc.errors()[0]
    where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
    return f"{source}: field {where!r}: {problem['msg']}"


def read_manifest(path: Path) -> Bundle:
    source = path / MANIFEST if path.is_dir() else path
    if not source.is_file():
        raise BundleError(f"{source}: no such bundle manifest" if path.is_dir() else f"{path}: not a bundle directory")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BundleError(f"{source}: malformed YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{source}: expected a mapping of fields, found {type(data).__name__}")
    try:
        return Bundle.model_validate(data)
    except pydantic.ValidationError as exc:
        raise BundleError(describe_validation_error(exc, str(source))) from None


def verify_files(root: Path, manifest: Bundle) -> None:
    """Every file the manifest names exists inside the bundle and has its recorded hash."""
    resolved_root = root.resolve()
    adapter_dir = root / manifest.adapter.path
    if adapter_dir.is_dir():
        pickled = sorted(p.name for p in adapter_dir.iterdir() if p.suffix in PICKLED_SUFFIXES)
        if pickled:
            raise BundleError(f"{adapter_dir}: pickled weights ({', '.join(pickled)}) are never loaded; use safetensors")
    for ref in manifest.file_refs():
        path = (root / ref.path).resolve()
        if not path.is_relative_to(resolved_root):
            raise BundleError(f"{root}: {ref.path} points outside the bundle")
        if not path.is_file():
            raise BundleError(f"{root}: missing file {ref.path}")
        found = sha256_file(path)
        if found != ref.sha256:
            raise BundleError(f"{root}: hash mismatch for {ref.path}: recorded {ref.sha256[:12]}…, found {found[:12]}…")


def load_bundle(path: str | Path) -> LoadedBundle:
    """Parse, validate and hash-check a bundle; load its contract and golden sets."""
    root = Path(path)
    if root.is_file():
        root = root.parent
    manifest = read_manifest(root)
    verify_files(root, manifest)
    contract = Contract.load(root / manifest.task.contract.path)
    golden: dict[str, list[GoldenItem]] = {}
    for name, ref in sorted(manifest.golden_sets.items()):
        items = load_jsonl(root / ref.path)
        if name in ("eval", "train", "validation"):
            contract.check_items(items, root / ref.path)
        golden[name] = items
    if "eval" not in golden:
        raise BundleError(f"{root}: golden_sets has no 'eval' split")
    return LoadedBundle(root, manifest, sha256_file(root / MANIFEST), contract, golden)


def build_gates(manifest: Bundle) -> list[tuple[Any, bool]]:
    """Instantiate every gate with its parameters checked; (gate, required) pairs."""
    from gatekeeper.gating.registry import get_gate

    built = []
    seen: set[str] = set()
    for spec in manifest.gates:
        if spec.name in seen:
            raise BundleError(f"gate {spec.name!r} is listed twice")
        seen.add(spec.name)
        built.append((get_gate(spec.name).build(spec.params), spec.required))
    return built


def write_manifest(root: Path, manifest: Bundle) -> None:
    data = manifest.model_dump(mode="json", exclude_none=True)
    (root / MANIFEST).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def file_ref(root: Path, relative: str) -> FileRef:
    return FileRef(path=relative, sha256=sha256_file(root / relative))


def describe_error(exc: GatekeeperError) -> str:
    return str(exc).splitlines()[0]
