"""What the trainer sees, before it trains: ``gatekeeper inspect RECIPE|BUNDLE``.

Examples are encoded by ``data.encode`` and their loss mask taken from
``data.collate``'s labels, so what is shown is what training computes, not a
second rendering of it. The data is checked as training checks it
(``data.load_recipe_data``): anything training refuses stops here with one
line, except examples longer than ``max_seq_len``, which are all listed
instead of the first one stopping the run. Only the tokenizer is loaded.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from gatekeeper._util.text import first_line
from gatekeeper.bundle.goldens import Contract, GoldenItem
from gatekeeper.bundle.manifest import MANIFEST, PromptTemplate
from gatekeeper.bundle.recipe import TrainingSettings
from gatekeeper.errors import RecipeError, RuntimeLoadError
from gatekeeper.training.data import Encoded, collate, encode, load_recipe_data, load_training_split, too_long

SPLITS = ("train", "validation", "eval")
TRAINED = ("train", "validation")
"""The splits training encodes and refuses when an example is longer than ``max_seq_len``."""
NO_LABEL = "(no label)"
"""The length row of the examples whose expected answer has no label field."""
DEFAULT_MAX_SEQ_LEN = TrainingSettings.model_fields["max_seq_len"].default


@dataclass(frozen=True)
class Token:
    id: int
    text: str
    """This token alone, decoded; where it is part of a character split across tokens, its raw piece."""
    loss: bool
    """Carries loss: ``collate`` labels it with its id, not -100 (the answer and its end-of-turn token)."""
    weight: float = 1.0
    """Its weight in the loss (``training.field_weights``, which only the train split is encoded with)."""


@dataclass(frozen=True)
class ExampleView:
    split: str
    id: str
    line: int
    label: str | None
    tokens: list[Token]
    prompt_tokens: int
    answer_tokens: int
    max_seq_len: int

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def cut_at(self) -> int | None:
        """The index of the first token ``max_seq_len`` would cut, or None when the example fits."""
        return self.max_seq_len if self.length > self.max_seq_len else None


@dataclass(frozen=True)
class Spread:
    """Token counts of a group of examples. ``p95`` is the nearest rank: the smallest count that
    95% of the examples do not exceed."""

    min: int
    median: float
    p95: int
    max: int

    @classmethod
    def of(cls, values: list[int]) -> Spread:
        ordered = sorted(values)
        p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]
        return cls(ordered[0], float(statistics.median(ordered)), p95, ordered[-1])


@dataclass(frozen=True)
class LengthRow:
    split: str
    label: str | None
    """None: the whole split; else the examples whose expected answer has this label (``NO_LABEL``: none)."""
    count: int
    total: Spread
    prompt: Spread
    answer: Spread
    over: int
    """Examples longer than ``max_seq_len``."""


@dataclass(frozen=True)
class OverLong:
    split: str
    id: str
    line: int
    length: int


@dataclass
class Inspection:
    kind: str
    """``recipe`` or ``bundle``."""
    source: str
    name: str
    base: str
    tokenizer: str
    """Where the tokenizer was read from."""
    max_seq_len: int
    max_seq_len_from: str
    prompt: PromptTemplate
    label_field: str | None
    examples: list[ExampleView]
    lengths: list[LengthRow]
    over_long: list[OverLong]
    """Train and validation examples longer than ``max_seq_len``, in file order: training refuses them."""
    notes: list[str] = field(default_factory=list)
    field_weights: dict[str, float] = field(default_factory=dict)
    """``training.field_weights``: the answer fields whose tokens weigh more in the train split's loss."""

    @property
    def refused(self) -> bool:
        """Training would refuse this data (an example longer than ``max_seq_len``)."""
        return bool(self.over_long)

    @property
    def needed_max_seq_len(self) -> int:
        """The smallest ``max_seq_len`` that fits every train and validation example."""
        return max((row.total.max for row in self.lengths if row.split in TRAINED and row.label is None), default=0)


def inspect_path(path: str | Path, examples: int = 3) -> Inspection:
    """A bundle (a directory holding bundle.yaml, or that file), a recipe file, or a directory holding recipe.yaml."""
    path = Path(path)
    if (path.is_dir() and (path / MANIFEST).is_file()) or (path.name == MANIFEST and path.is_file()):
        return inspect_bundle(path, examples)
    if path.is_dir():
        if (path / "recipe.yaml").is_file():
            return inspect_recipe(path / "recipe.yaml", examples)
        raise RecipeError(f"{path}: neither a bundle (no {MANIFEST}) nor a recipe directory (no recipe.yaml)")
    return inspect_recipe(path, examples)


def inspect_recipe(path: str | Path, examples: int = 3) -> Inspection:
    from gatekeeper.bundle.base import resolve_base
    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.training.methods import get_method

    recipe, root = load_recipe(path)
    # everything training refuses before it encodes
    checked = load_recipe_data(recipe.data, root, recipe.training.field_weights)
    method = get_method(recipe.method)
    if method.preflight is not None:  # settings the base cannot take (reads its config, not its weights)
        method.preflight(recipe, root)
    base = resolve_base(recipe.base, relative_to=root)
    notes = _rehearsal_note(recipe)
    splits = {"train": checked.train, "validation": checked.validation, "eval": checked.eval}
    return _inspect("recipe", str(path), recipe.name, base, splits, checked.contract, recipe.data.prompt,
                    recipe.training.max_seq_len, "the recipe", examples, notes, recipe.training.field_weights)


def inspect_bundle(path: str | Path, examples: int = 3) -> Inspection:
    from gatekeeper.bundle.base import resolve_base
    from gatekeeper.bundle.loading import load_bundle

    bundle = load_bundle(path)  # every hash checked, every file parsed
    manifest = bundle.manifest
    splits: dict[str, list[GoldenItem]] = {}
    for name in SPLITS:
        if name not in bundle.golden:
            continue
        if name in TRAINED:  # repeated inputs, as training checks them
            splits[name] = load_training_split(bundle.path(manifest.golden_sets[name]), bundle.contract)
        else:
            splits[name] = bundle.golden[name]
    notes = [f"the bundle carries no {name} split" for name in TRAINED if name not in splits]
    notes += _rehearsal_note(bundle.recipe) if bundle.recipe is not None else []
    if bundle.recipe is not None:
        max_seq_len, source = bundle.recipe.training.max_seq_len, "the bundled recipe"
    else:
        max_seq_len, source = DEFAULT_MAX_SEQ_LEN, "the recipe default (the bundle carries no recipe)"
    base = resolve_base(manifest.base.ref, relative_to=bundle.root)
    weights = bundle.recipe.training.field_weights if bundle.recipe is not None else {}
    return _inspect("bundle", str(path), f"{manifest.name} v{manifest.version}", base, splits, bundle.contract,
                    manifest.task.prompt, max_seq_len, source, examples, notes, weights)


def _rehearsal_note(recipe) -> list[str]:
    rehearsal = recipe.data.rehearsal
    if rehearsal is None:
        return []
    return [f"rehearsal rows ({rehearsal.per_batch} per batch, from {rehearsal.prompts}) are the base's own answers, "
            "generated when training starts: their lengths are known only then, and training refuses those longer "
            "than max_seq_len too"]


def _inspect(kind, source, name, base, splits, contract: Contract, prompt: PromptTemplate, max_seq_len: int,
             max_seq_len_from: str, examples: int, notes: list[str], field_weights: dict[str, float]) -> Inspection:
    from gatekeeper.runtime.prompts import load_tokenizer

    try:
        tokenizer = load_tokenizer(base.path)
    except (OSError, ValueError) as exc:  # a base directory without a usable tokenizer
        raise RuntimeLoadError(f"{base.path}: no tokenizer could be loaded ({first_line(exc)})") from None
    # as the trainer encodes them: field weights on the train split only (validation is an unweighted loss)
    encoded = {split: encode(items, tokenizer, prompt, field_weights if split == "train" else None)
               for split, items in splits.items()}
    lines = {split: {item.id: item.line for item in items} for split, items in splits.items()}
    labels = {split: {item.id: label_of(item, contract) for item in items} for split, items in splits.items()}

    lengths = []
    for split, rows in encoded.items():
        lengths.append(_row(split, None, rows, max_seq_len))
        for label in _label_order(labels[split].values(), contract):
            group = [e for e in rows if labels[split][e.id] == label]
            lengths.append(_row(split, NO_LABEL if label is None else label, group, max_seq_len))
    over_long = [OverLong(split, e.id, lines[split][e.id], len(e))
                 for split in TRAINED if split in encoded for e in too_long(encoded[split], max_seq_len)]

    shown_split = next((s for s in TRAINED if s in encoded), "eval")
    if shown_split != "train":
        notes.append(f"examples are from the {shown_split} split")
    chosen = list(encoded[shown_split][:examples])
    cut = too_long(encoded[shown_split], max_seq_len)
    if examples and cut and not any(len(e) > max_seq_len for e in chosen):
        chosen.append(max(cut, key=len))  # so the cut is seen, not only counted
    views = [_view(shown_split, e, lines[shown_split][e.id], labels[shown_split][e.id], tokenizer, max_seq_len)
             for e in chosen]
    return Inspection(kind, source, name, base.ref, str(base.path), max_seq_len, max_seq_len_from, prompt,
                      contract.label_field, views, lengths, over_long, notes, dict(field_weights))


def label_of(item: GoldenItem, contract: Contract) -> str | None:
    """The expected answer's value of the contract's label field, as text; None when there is none."""
    if contract.label_field is None or not isinstance(item.expected, dict) or contract.label_field not in item.expected:
        return None
    value = item.expected[contract.label_field]
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _label_order(found, contract: Contract) -> list[str | None]:
    """The contract's labels in its order, then any others sorted, then no label; only those present."""
    present = set(found)
    if present == {None}:
        return []
    known = [label for label in contract.labels if label in present]
    others = sorted(label for label in present - set(known) if label is not None)
    return known + others + ([None] if None in present else [])


def _row(split: str, label: str | None, rows: list[Encoded], max_seq_len: int) -> LengthRow:
    return LengthRow(split, label, len(rows),
                     Spread.of([len(e) for e in rows]), Spread.of([len(e.prompt_ids) for e in rows]),
                     Spread.of([len(e.answer_ids) for e in rows]), len(too_long(rows, max_seq_len)))


def _view(split: str, example: Encoded, line: int, label: str | None, tokenizer, max_seq_len: int) -> ExampleView:
    ids, _, labels = collate([example], tokenizer.pad_token_id)
    weights = (1.0,) * len(example.prompt_ids) + example.loss_weights  # the loss tokens are the answer's, in order
    tokens = [Token(int(i), token_text(tokenizer, int(i)), int(lab) != -100, w)
              for i, lab, w in zip(ids[0], labels[0], weights)]
    return ExampleView(split, example.id, line, label, tokens, len(example.prompt_ids), len(example.answer_ids),
                       max_seq_len)


LOSS_OPEN, LOSS_CLOSE = "⟦", "⟧"
"""Around each token that carries loss, so the mask reads without colour (piped, or printed)."""
WEIGHT = "×"
"""After a loss token whose weight is not 1: ``⟦high⟧×8``."""
SEPARATOR = "│"
"""Between two tokens that carry no loss."""
CUT = "✂"
"""Where ``max_seq_len`` cuts an example."""


def visible(text: str) -> str:
    """A token's text with its line breaks and tabs shown (a line break still breaks the line)."""
    return text.replace("\r", "␍").replace("\t", "→").replace("\n", "↵\n")


def fmt_count(value: float) -> str:
    """A token count or median: whole numbers without a decimal point."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


@dataclass(frozen=True)
class Piece:
    """One piece of an example as shown, in the terminal and in the HTML page alike."""

    text: str
    kind: str
    """``token`` (no loss), ``loss`` (bracketed), ``separator`` or ``cut`` (the marker at ``max_seq_len``)."""
    cut: bool = False
    """Past ``max_seq_len``: training would lose it."""
    token_id: int | None = None


def pieces(view: ExampleView) -> list[Piece]:
    """The example token by token: loss tokens bracketed, a separator between two others (none after a
    line break, which shows the boundary itself), the cut marker before token ``max_seq_len``."""
    out: list[Piece] = []
    for index, token in enumerate(view.tokens):
        cut = view.cut_at is not None and index >= view.cut_at
        if index == view.cut_at:
            out.append(Piece(f" {CUT} max_seq_len {view.max_seq_len}: the rest is cut {CUT} ", "cut"))
        elif index and not token.loss and not (before := view.tokens[index - 1]).loss and not before.text.endswith("\n"):
            out.append(Piece(SEPARATOR, "separator", cut))
        text = visible(token.text)
        if token.loss:
            weight = f"{WEIGHT}{fmt_count(token.weight)}" if token.weight != 1 else ""
            out.append(Piece(f"{LOSS_OPEN}{text}{LOSS_CLOSE}{weight}", "loss", cut, token.id))
        else:
            out.append(Piece(text, "token", cut, token.id))
    return out


def token_text(tokenizer, token_id: int) -> str:
    text = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if "\ufffd" in text:  # a byte of a character split across tokens: show the token's own piece
        return str(tokenizer.convert_ids_to_tokens(token_id))
    return text
