"""What a peft LoRA adapter's files say, and whether they fit a base, read from headers alone.

``gatekeeper init`` takes adapters trained elsewhere. Before it writes anything it
wants to know that the runtime will load the adapter onto the base as trained:
peft itself skips a tensor whose module the base lacks with no more than a
warning, and fails on a shape only once the weights are loaded. Everything here
reads safetensors headers (names and shapes), never a tensor.

Shapes, as peft saves a LoRA layer on a linear base weight ``(out_features, in_features)``:
``lora_A`` is ``(r, in_features)``, ``lora_B`` is ``(out_features, r)``; on an
embedding ``(num_embeddings, dim)``, ``lora_embedding_A`` is ``(r, num_embeddings)``
and ``lora_embedding_B`` ``(dim, r)``; DoRA's magnitude vector and a LoRA bias are
``(out_features,)``. Any other tensor (``modules_to_save``) replaces a base weight
and has its shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gatekeeper._util.text import first_line, quote
from gatekeeper.errors import BundleError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft names a tensor by its module's path inside the wrapped model

Shape = tuple[int, ...]
# module path, then what the tensor is to that module
_LORA_TENSOR = re.compile(
    r"^(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|lora_embedding_B"
    r"|lora_magnitude_vector(?:\.weight)?)$"
)


def tensor_shapes(path: Path, what: str) -> dict[str, Shape]:
    """Name -> shape of every tensor in a safetensors file, from its header; no tensor is read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{path}: {what} is not a valid safetensors file ({first_line(exc)})") from None


def base_shapes(base_dir: Path) -> dict[str, Shape]:
    """Every weight of a base directory (all its safetensors shards) -> shape."""
    shapes: dict[str, Shape] = {}
    for shard in sorted(Path(base_dir).glob("*.safetensors")):
        shapes |= tensor_shapes(shard, "base weights file")
    return shapes


@dataclass(frozen=True)
class LoraLayer:
    """One adapted module: its path in the base, its rank, and the shapes of its tensors."""

    module: str
    base_weight: str
    rank: int
    parts: dict[str, Shape]


def _named(targets: str | list[str], module: str) -> bool:
    """Whether ``target_modules`` names ``module``, as peft matches them: a list by name or path suffix, a string as a regex."""
    if targets == "all-linear":
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith(f".{t}") for t in targets or ())


def expected_rank(config: dict, module: str) -> int:
    """``r``, unless a ``rank_pattern`` key (a module name or regex, matched at a path boundary) overrides it."""
    for pattern, rank in (config.get("rank_pattern") or {}).items():
        if re.match(rf"(?:.*\.)?(?:{pattern})$", module):
            return rank
    return config["r"]


def check_config(config: object, path: Path) -> dict:
    """The adapter config as a LoRA config with the fields every check reads, or one line saying what is off."""
    if not isinstance(config, dict):
        raise BundleError(f"{path}: expected a JSON object, found {type(config).__name__}")
    kind = config.get("peft_type")
    if kind != "LORA":
        raise BundleError(f"{path}: peft_type is {quote(kind)}; gatekeeper judges LoRA adapters (peft_type \"LORA\")")
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise BundleError(f"{path}: field 'r' must be a positive integer, got {quote(r)}")
    targets = config.get("target_modules")
    if not (isinstance(targets, str) or (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))):
        raise BundleError(f"{path}: field 'target_modules' must be a module name list or a regex, got {quote(targets)}")
    patterns = [("target_modules", targets)] if isinstance(targets, str) else []
    patterns += [("rank_pattern", key) for key in config.get("rank_pattern") or {}]
    for field, pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise BundleError(f"{path}: {field} {quote(pattern)} is not a valid regex ({exc})") from None
    return config


def _base_key(base: dict[str, Shape], name: str) -> str | None:
    """The base weight called ``name``; a checkpoint of the bare transformer (no causal-LM wrapper) names
    its weights without the leading ``model.``."""
    if name in base:
        return name
    headless = name.split(".", 1)[-1]
    return headless if headless in base else None


def _check_targets(config: dict, base: dict[str, Shape], config_path: Path, base_label: str) -> None:
    """Every module ``target_modules`` lists exists in the base."""
    targets = config["target_modules"]
    modules = [k.removesuffix(".weight") for k, s in base.items() if k.endswith(".weight") and len(s) == 2]
    if targets == "all-linear":
        return
    names = [targets] if isinstance(targets, str) else targets
    for target in names:
        if not any(_named(target if isinstance(targets, str) else [target], m) for m in modules):
            known = ", ".join(sorted({m.rsplit(".", 1)[-1] for m in modules}))
            raise BundleError(f"{config_path}: target module {quote(target)} is not in base {base_label} "
                              f"(its modules end in: {known})")


def _fits(part: str, shape: Shape, base_shape: Shape, rank: int, fan_in_fan_out: bool) -> str | None:
    """The shape ``part`` must have on this base weight, when ``shape`` is not it."""
    if len(base_shape) != 2:
        return "a 2-dimensional base weight" if part != "lora_magnitude_vector" else None
    out_f, in_f = reversed(base_shape) if fan_in_fan_out else base_shape  # GPT-2's Conv1D stores (in, out)
    want = {
        "lora_A.weight": (rank, in_f), "lora_B.weight": (out_f, rank), "lora_B.bias": (out_f,),
        "lora_magnitude_vector": (out_f,),
        "lora_embedding_A": (rank, base_shape[0]), "lora_embedding_B": (base_shape[1], rank),
    }[part]
    return None if tuple(shape) == want else f"[{', '.join(map(str, want))}]"


def fit_to_base(config: dict, shapes: dict[str, Shape], base: dict[str, Shape], *, config_path: Path,
                weights_path: Path, base_label: str) -> list[LoraLayer]:
    """Every tensor adapts a module the base has and ``target_modules`` names, at the configured rank, in a shape that fits.

    Returns the adapted layers; raises BundleError naming the first tensor that does not fit.
    """
    _check_targets(config, base, config_path, base_label)
    if not shapes:
        raise BundleError(f"{weights_path}: holds no tensors")
    layers: dict[str, dict[str, Shape]] = {}
    for name in sorted(shapes):
        if not name.startswith(PEFT_PREFIX):
            raise BundleError(f"{weights_path}: tensor {quote(name)} is not named as peft saves one ({PEFT_PREFIX}…)")
        inner = name.removeprefix(PEFT_PREFIX)
        match = _LORA_TENSOR.match(inner)
        if match is None:  # modules_to_save: a whole weight that replaces the base's
            key = _base_key(base, inner)
            if key is None or base[key] != shapes[name]:
                found = "has no such weight" if key is None else f"has it as {list(base[key])}"
                raise BundleError(f"{weights_path}: tensor {inner} {list(shapes[name])} replaces a base weight, "
                                  f"but base {base_label} {found}")
            continue
        part = match["part"].removesuffix(".weight") if "magnitude" in match["part"] else match["part"]
        layers.setdefault(match["module"], {})[part] = shapes[name]
    found = []
    for module, parts in sorted(layers.items()):
        found.append(_fit_layer(config, module, parts, base, config_path, weights_path, base_label))
    return found


def _fit_layer(config: dict, module: str, parts: dict[str, Shape], base: dict[str, Shape],
               config_path: Path, weights_path: Path, base_label: str) -> LoraLayer:
    key = _base_key(base, f"{module}.weight")
    if key is None:
        raise BundleError(f"{weights_path}: tensors adapt {module}, which base {base_label} does not have")
    if not _named(config["target_modules"], module):
        raise BundleError(f"{weights_path}: tensors adapt {module}, which {CONFIG_FILE} target_modules "
                          f"{quote(config['target_modules'])} does not name, so peft would not load them")
    pairs = [("lora_A.weight", "lora_B.weight"), ("lora_embedding_A", "lora_embedding_B")]
    pair = next((p for p in pairs if p[0] in parts or p[1] in parts), None)
    if pair is None or not all(p in parts for p in pair):
        missing = "lora_A/lora_B" if pair is None else next(p for p in pair if p not in parts)
        raise BundleError(f"{weights_path}: {module} has no {missing} tensor")
    rank = expected_rank(config, module)
    down = parts[pair[0]]
    if len(down) != 2 or down[0] != rank:
        raise BundleError(f"{weights_path}: {module}.{pair[0]} {list(down)} has rank {down[0] if down else '?'}, "
                          f"but {config_path.name} says r = {rank}")
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    for part, shape in sorted(parts.items()):
        want = _fits(part, shape, base[key], rank, fan_in_fan_out)
        if want is not None:
            raise BundleError(f"{weights_path}: {module}.{part} is {list(shape)}, which does not fit base weight "
                              f"{key} {list(base[key])} of {base_label} (it needs {want})")
    return LoraLayer(module, key, rank, parts)
