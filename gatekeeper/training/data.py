"""Turn golden items into training tensors, rendered exactly as the runtime renders prompts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gatekeeper.bundle.goldens import Contract, GoldenItem, answer_text, load_jsonl
from gatekeeper.bundle.manifest import PromptTemplate
from gatekeeper.bundle.recipe import DataSettings
from gatekeeper.errors import RecipeError


@dataclass(frozen=True)
class Encoded:
    id: str
    prompt_ids: list[int]
    answer_ids: list[int]
    answer_weights: tuple[float, ...] | None = None
    """Each answer token's weight in the loss (``training.field_weights``); None: all 1."""

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)

    @property
    def loss_weights(self) -> tuple[float, ...]:
        """Each answer token's weight in the loss, 1 where no field weight applies."""
        return self.answer_weights or (1.0,) * len(self.answer_ids)


def load_training_split(path: Path, contract: Contract) -> list[GoldenItem]:
    """Load a split and stop at the first contract violation or repeated input, naming file and line."""
    items = load_jsonl(path)
    contract.check_items(items, path)
    seen: dict[str, int] = {}
    for item in items:
        key = " ".join(item.input.split()).lower()
        if key in seen:
            raise RecipeError(f"{path}:{item.line}: duplicate input (same as line {seen[key]})")
        seen[key] = item.line
    return items


@dataclass(frozen=True)
class RecipeData:
    """A recipe's data, read and checked as training reads it before the first step."""

    contract: Contract
    train: list[GoldenItem]
    validation: list[GoldenItem]
    eval: list[GoldenItem]


def load_recipe_data(data: DataSettings, root: Path, field_weights: dict[str, float] | None = None) -> RecipeData:
    """Every check training makes on the data before a model loads (``gatekeeper inspect`` makes the same):
    the contract, the two training splits (contract, repeated inputs), the eval split, the extra golden
    sets and the rehearsal pool, each stopping at its first problem with file and line; with
    ``field_weights`` (``training.field_weights``), that every field named is in some training answer."""
    contract = Contract.load(root / data.contract)
    train_items = load_training_split(root / data.train, contract)
    val_items = load_training_split(root / data.validation, contract)
    eval_items = load_jsonl(root / data.eval)
    for extra in data.extra.values():  # fail now, not after training, on a bad golden set
        load_jsonl(root / extra)
    if data.rehearsal is not None:  # read again when the base answers it; a bad file should not wait for the model
        load_jsonl(root / data.rehearsal.prompts)
    check_field_weights(field_weights or {}, train_items, root / data.train)
    return RecipeData(contract, train_items, val_items, eval_items)


def encode(items: list[GoldenItem], tokenizer, prompt: PromptTemplate,
           field_weights: dict[str, float] | None = None) -> list[Encoded]:
    """Prompt and answer ids as training sees them; with ``field_weights``, each answer token's loss
    weight: the named fields' values weigh as given, every other token 1."""
    from gatekeeper.runtime.prompts import encode_example

    encoded = []
    for item in items:
        prompt_ids, answer_ids = encode_example(tokenizer, prompt.messages(item.input), answer_text(item.expected))
        weights = _token_weights(tokenizer, item.expected, answer_ids, field_weights) if field_weights else None
        encoded.append(Encoded(item.id, prompt_ids, answer_ids, weights))
    return encoded


def field_spans(expected) -> dict[str, tuple[int, int]]:
    """Where each top-level field's value lies in ``answer_text(expected)``: {field: (start, end)}."""
    if not isinstance(expected, dict):
        return {}
    spans, position = {}, 1  # after '{'
    for index, (key, value) in enumerate(expected.items()):
        position += (2 if index else 0) + len(answer_text(key)) + 2  # ', ' between fields, ': ' after the key
        written = answer_text(value)
        spans[key] = (position, position + len(written))
        position += len(written)
    return spans


def _token_weights(tokenizer, expected, answer_ids: list[int], field_weights: dict[str, float]) -> tuple[float, ...]:
    """A weight per answer token: a token that overlaps a weighted field's value takes that field's weight.

    Offsets come from the tokenizer itself; the answer is tokenized alone (``encode_example``), so
    they index ``answer_text(expected)``, checked to give the same ids."""
    text = answer_text(expected)
    encoding = tokenizer(text + tokenizer.eos_token, add_special_tokens=False, return_offsets_mapping=True)
    if encoding["input_ids"] != answer_ids:
        raise RecipeError("training.field_weights: the tokenizer splits this answer differently with offsets")
    found = field_spans(expected)
    spans = [(found.get(name), weight) for name, weight in field_weights.items()]
    weights = []
    for start, end in encoding["offset_mapping"]:
        hit = [w for span, w in spans if span is not None and start < span[1] and end > span[0]]
        weights.append(max(hit) if hit else 1.0)
    return tuple(weights)


def check_field_weights(field_weights: dict[str, float], items: list[GoldenItem], source: Path) -> None:
    """Refuse a weighted field that no training answer has: a typo would silently weigh nothing."""
    for name in field_weights:
        if not any(isinstance(i.expected, dict) and name in i.expected for i in items):
            raise RecipeError(f"training.field_weights names {name!r}, which no answer in {source} has")


def too_long(encoded: list[Encoded], max_seq_len: int) -> list[Encoded]:
    """The examples ``max_seq_len`` would cut: training refuses them (``check_lengths``), inspect lists them."""
    return [e for e in encoded if len(e) > max_seq_len]


def check_lengths(encoded: list[Encoded], max_seq_len: int, source: Path) -> int:
    """Refuse when any example would be cut (nothing is ever truncated); return the longest length in tokens."""
    cut = too_long(encoded, max_seq_len)
    if cut:
        worst = max(cut, key=len)
        raise RecipeError(
            f"{source}: {len(cut)} example(s) exceed max_seq_len={max_seq_len} and their answers would be cut "
            f"(longest: {worst.id}, {len(worst)} tokens); raise training.max_seq_len"
        )
    return max((len(e) for e in encoded), default=0)


def collate(batch: list[Encoded], pad_id: int):
    """Right-padded ids, mask, and labels that are -100 everywhere but the answer tokens."""
    import torch

    width = max(len(e) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, example in enumerate(batch):
        n, p = len(example), len(example.prompt_ids)
        ids[row, :n] = torch.tensor(example.prompt_ids + example.answer_ids)
        mask[row, :n] = 1
        labels[row, p:n] = torch.tensor(example.answer_ids)
    return ids, mask, labels


def labelled_weights(batch: list[Encoded]):
    """The loss weight of each labelled token of ``collate(batch)``, flat in the order the labelled
    positions come (row by row); None when every weight is 1."""
    import torch

    if all(e.answer_weights is None for e in batch):
        return None
    return torch.tensor([w for e in batch for w in e.loss_weights])
