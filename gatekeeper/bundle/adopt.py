"""``gatekeeper init``: a peft LoRA adapter trained elsewhere (TRL, axolotl, a notebook), taken in as a bundle.

The result is what ``gatekeeper train`` writes (``gatekeeper.training.versions``,
sharing its pieces through ``gatekeeper.bundle.assembly``) less the recipe and the
training record, which only gatekeeper's trainer has: the adapter files in
``adapter/``, the contract and golden sets in ``data/``, the base's reference,
hash and tokenizer fingerprints, ``serving_profile.json``, a provenance record
``adapter_source.json``, the data's declared provenance (``provenance`` in
``bundle.yaml``, empty unless given), and a preset of gates, signed.

Everything is checked before anything is written, and from files alone: the
adapter's config and safetensors header, its fit to the base's weight shapes
(read from the base's headers), the golden sets against the contract. No model
weights are loaded. A refusal leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pydantic

from gatekeeper._util.documents import read_json, read_text, validation_problem
from gatekeeper._util.files import pickled_files, staged_dir
from gatekeeper._util.hashing import sha256_text
from gatekeeper._util.text import first_line, quote
from gatekeeper.bundle.assembly import (
    CONTRACT_FILE,
    adapter_files,
    base_ref,
    copy_data,
    golden_refs,
    package_versions,
    publish,
    publish_next_version,
    version_of,
    write_json,
    write_serving_profile,
)
from gatekeeper.bundle.base import ALIASES, ResolvedBase, base_fingerprint, resolve_base
from gatekeeper.bundle.goldens import Contract, GoldenItem, load_jsonl
from gatekeeper.bundle.manifest import (
    AdapterRef,
    BaseRef,
    Bundle,
    DataProvenance,
    GateSpec,
    PromptTemplate,
    TaskSpec,
    file_ref,
    read_manifest,
)
from gatekeeper.bundle.peft_adapter import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    LoraLayer,
    base_shapes,
    check_config,
    fit_to_base,
    tensor_shapes,
)
from gatekeeper.bundle.recipe import NAME_PATTERN
from gatekeeper.errors import BundleError, GatekeeperWarning, RuntimeLoadError

SOURCE_FILE = "adapter_source.json"
SPLITS = ("eval", "train", "validation")  # the sets whose answers must keep the contract, as load_bundle checks
SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # becomes data/<name>.jsonl
PEFT_FIELDS = ("peft_type", "peft_version", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules",
               "use_rslora", "use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "fan_in_fan_out", "bias")


@dataclass(frozen=True)
class Adopted:
    """What ``adopt_adapter`` wrote: the bundle, its manifest, how many layers the adapter changes, what it warned."""

    path: Path
    manifest: Bundle
    layers: int
    warnings: list[str] = field(default_factory=list)


def preset_gates(sets: Collection[str], contract: Contract) -> list[GateSpec]:
    """The demo's gates, less those whose golden sets (or, for task_accuracy, a label field) were not given.

    Each gate's default thresholds; ``json_parse`` and ``task_accuracy`` spell theirs out, as the demo
    recipe does, so the knobs are in ``bundle.yaml`` to edit.
    """
    sets = set(sets)
    gates = [GateSpec(name="json_parse", params={"min_rate": 0.95})]
    if contract.label_field is not None:
        gates.append(GateSpec(name="task_accuracy", params={"min_delta": 0.10}))
    if {"regression", "control"} <= sets:
        gates.append(GateSpec(name="regression"))
    gates.append(GateSpec(name="adapter_effect"))
    if {"safety_refuse", "safety_benign", "train"} <= sets:  # its leak probes are training items
        gates.append(GateSpec(name="safety"))
    if "train" in sets:
        gates += [GateSpec(name="contamination"), GateSpec(name="dataset_audit")]
    gates.append(GateSpec(name="template_drift"))
    return gates


def adopt_adapter(
    adapter_dir: str | Path,
    *,
    base: str,
    golden: dict[str, str | Path],
    contract: str | Path,
    name: str,
    prompt: PromptTemplate | None = None,
    out: str | Path | None = None,
    provenance: dict[str, DataProvenance | dict] | None = None,
) -> Adopted:
    """Check an adapter trained elsewhere and write it as a signed bundle at ``out`` (default ``adapters/<name>/v<N>``).

    ``golden`` maps set names to JSONL files and must hold ``eval``. ``out`` must not exist; its
    name ``vN`` gives the version (1 otherwise). ``provenance`` declares per set its source, licence
    and customer data (``bundle.yaml``'s ``provenance``; left empty when not given). Every refusal
    is one line (a GatekeeperError).
    """
    adapter_dir, prompt = Path(adapter_dir), prompt or PromptTemplate()
    target = Path(out) if out is not None else None
    _check_request(name, prompt, golden, target)
    provenance = _declaration(provenance or {}, golden)
    config, shapes = _read_adapter(adapter_dir)
    resolved = resolve_base(base)
    layers = fit_to_base(config, shapes, base_shapes(resolved.path), config_path=adapter_dir / CONFIG_FILE,
                         weights_path=adapter_dir / WEIGHTS_FILE, base_label=repr(base))
    contract_doc, items = _load_golden(golden, Path(contract))
    tokenizer, fingerprint = _base_tokenizer(resolved.path)
    source = _provenance(adapter_dir, config, base, resolved, layers, fingerprint)
    for note in source["warnings"]:  # every check passed: what remains is worth knowing, not refusing
        warnings.warn(note, GatekeeperWarning, stacklevel=2)
    # -- nothing was written before this line --
    directory = target.parent if target is not None else Path("adapters") / name
    with staged_dir(directory, f".{target.name if target else 'v'}-staging-") as staging:
        (staging / "adapter").mkdir()
        for path in _adapter_sources(adapter_dir):
            shutil.copyfile(path, staging / "adapter" / path.name)
        files = adapter_files(staging / "adapter")
        copies = {CONTRACT_FILE: Path(contract)} | {f"{n}.jsonl": Path(p) for n, p in golden.items()}
        source |= {"files": files, "corpus_sha256": copy_data(staging, copies), "packages": package_versions()}
        manifest = Bundle(
            name=name,
            version=(version_of(target) or 1) if target is not None else 0,  # 0: publish_next_version numbers it
            base=BaseRef(ref=base_ref(base, resolved.path, target or directory / "v0"), sha256=resolved.sha256,
                         **fingerprint),
            adapter=AdapterRef(path="adapter", method="dora" if config.get("use_dora") else "lora", kind="lora",
                               files=files),
            task=TaskSpec(contract=file_ref(staging, f"data/{CONTRACT_FILE}"), prompt=prompt),
            golden_sets=golden_refs(staging, [n for n in SPLITS if n in items] + sorted(set(items) - set(SPLITS))),
            provenance=provenance,
            gates=preset_gates(items, contract_doc),
            adapter_source=write_json(staging, SOURCE_FILE, source),
            serving_profile=write_serving_profile(staging, tokenizer),
        )
        path = publish(staging, target, manifest) if target else publish_next_version(staging, directory, manifest)
    return Adopted(path, read_manifest(path), len(layers), source["warnings"])


def _check_request(name: str, prompt: PromptTemplate, golden: dict, target: Path | None) -> None:
    if not re.match(NAME_PATTERN, name):
        raise BundleError(f"name {quote(name)}: use letters, digits, '.', '_' and '-' (it names a directory)")
    if "{input}" not in prompt.user:
        raise BundleError(f"user template {quote(prompt.user)} has no {{input}}: the item's input would never be shown")
    if "eval" not in golden:
        raise BundleError("an eval golden set is required: the gates score base and adapter on it")
    for set_name in golden:
        if not SET_NAME.match(set_name):
            raise BundleError(f"golden set name {quote(set_name)}: use letters, digits, '_' and '-'")
    if target is not None and (target.exists() or target.is_symlink()):
        raise BundleError(f"{target}: already exists; init writes a new bundle, never over a directory")


def _declaration(provenance: dict, golden: dict) -> dict[str, DataProvenance]:
    """Each set's declared provenance, for sets that were given, each a valid declaration."""
    found = {}
    for set_name, declared in provenance.items():
        if set_name not in golden:
            raise BundleError(f"provenance for set {quote(set_name)}: no such golden set was given "
                              f"(given: {', '.join(golden)})")
        try:
            found[set_name] = DataProvenance.model_validate(
                declared.model_dump(exclude_none=True) if isinstance(declared, DataProvenance) else declared)
        except pydantic.ValidationError as exc:
            raise BundleError(f"provenance for set {quote(set_name)}: {validation_problem(exc)}") from None
    return dict(sorted(found.items()))


def _read_adapter(adapter_dir: Path) -> tuple[dict, dict]:
    """The adapter's config and tensor shapes, refused unless it is a peft LoRA adapter in safetensors."""
    if not adapter_dir.is_dir():
        raise BundleError(f"{adapter_dir}: no such adapter directory")
    pickled = pickled_files(adapter_dir)
    if pickled:
        raise BundleError(f"{adapter_dir}: pickled files ({', '.join(pickled)}) are never loaded; save the adapter "
                          f"with safetensors and leave pickled files out of its directory")
    config_path, weights = adapter_dir / CONFIG_FILE, adapter_dir / WEIGHTS_FILE
    for path in (config_path, weights):
        if not path.is_file():
            raise BundleError(f"{path}: not found; a peft adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    config = check_config(read_json(config_path, BundleError, "adapter config"), config_path)
    return config, tensor_shapes(weights, "adapter weights file")


def _adapter_sources(adapter_dir: Path) -> list[Path]:
    """The files copied into the bundle: every file at the directory's top level but hidden ones."""
    return [p for p in sorted(adapter_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]


def _load_golden(golden: dict, contract_path: Path) -> tuple[Contract, dict[str, list[GoldenItem]]]:
    """Every set parses, and the splits' expected answers keep the contract, as loading the bundle will demand."""
    contract = Contract.load(contract_path)
    items = {}
    for set_name, path in golden.items():
        items[set_name] = load_jsonl(path)
        if set_name in SPLITS:
            contract.check_items(items[set_name], path)
    return contract, items


def _base_tokenizer(path: Path) -> tuple[object, dict[str, str]]:
    """The base's tokenizer as the runtime serves it, and the fingerprint ``gatekeeper check`` compares; no weights."""
    from transformers import (
        AutoTokenizer,  # deferred: transformers takes seconds to import
    )

    try:
        fingerprint = base_fingerprint(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise RuntimeLoadError(f"base {path}: its tokenizer does not load ({first_line(exc)})") from None
    if tokenizer.pad_token is None:  # as gatekeeper.runtime.prompts.load_tokenizer does, which this layer cannot import
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, fingerprint


def _claimed_base_matches(claimed: str, given: str, resolved: ResolvedBase) -> bool:
    alias = ALIASES.get(given)
    if claimed == given or (alias is not None and alias.hub_name and claimed.lower() == alias.hub_name.lower()):
        return True
    return Path(claimed).expanduser().resolve() == resolved.path.resolve()


def _adapter_chat_template(adapter_dir: Path) -> str | None:
    """The chat template saved beside the adapter (as TRL and axolotl save the tokenizer), if any."""
    if (adapter_dir / "chat_template.jinja").is_file():
        return read_text(adapter_dir / "chat_template.jinja", BundleError, "chat template")
    if (adapter_dir / "tokenizer_config.json").is_file():
        template = read_json(adapter_dir / "tokenizer_config.json", BundleError, "tokenizer config")
        template = template.get("chat_template") if isinstance(template, dict) else None
        return template if isinstance(template, str) else None
    return None


def _provenance(adapter_dir: Path, config: dict, given: str, resolved: ResolvedBase, layers: list[LoraLayer],
                fingerprint: dict) -> dict:
    """adapter_source.json: where the adapter came from, what it is, and what init noticed; files are added once copied."""
    claimed = config.get("base_model_name_or_path")
    matches = not claimed or _claimed_base_matches(str(claimed), given, resolved)
    notes = []
    if not matches:
        notes.append(f"{adapter_dir / CONFIG_FILE}: base_model_name_or_path is {quote(claimed)}, but the base given "
                     f"is {quote(given)}; it is judged on the base given (both recorded in {SOURCE_FILE})")
    template = _adapter_chat_template(adapter_dir)
    template_matches = template is None or sha256_text(template) == fingerprint["chat_template_sha256"]
    if not template_matches:
        notes.append(f"{adapter_dir}: the chat template saved with the adapter differs from base {quote(given)}'s; "
                     f"prompts are rendered with the base's")
    return {
        "source": str(adapter_dir.resolve()),
        "base_model_name_or_path": claimed,
        "base": given,
        "base_path": str(resolved.path.resolve()),
        "base_sha256": resolved.sha256,
        "base_matches_adapter_config": matches,
        **{key: config.get(key) for key in PEFT_FIELDS if key in config},
        "layers": len(layers),
        "adapter_bytes": (adapter_dir / WEIGHTS_FILE).stat().st_size,
        "base_bytes": sum(p.stat().st_size for p in resolved.path.glob("*.safetensors")),
        **({"chat_template_matches_base": template_matches} if template is not None else {}),
        "warnings": notes,
    }
