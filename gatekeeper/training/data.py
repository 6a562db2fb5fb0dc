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

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


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


def load_recipe_data(data: DataSettings, root: Path) -> RecipeData:
    """Every check training makes on the data before a model loads (``gatekeeper inspect`` makes the same):
    the contract, the two training splits (contract, repeated inputs), the eval split, the extra golden
    sets and the rehearsal pool, each stopping at its first problem with file and line."""
    contract = Contract.load(root / data.contract)
    train_items = load_training_split(root / data.train, contract)
    val_items = load_training_split(root / data.validation, contract)
    eval_items = load_jsonl(root / data.eval)
    for extra in data.extra.values():  # fail now, not after training, on a bad golden set
        load_jsonl(root / extra)
    if data.rehearsal is not None:  # read again when the base answers it; a bad file should not wait for the model
        load_jsonl(root / data.rehearsal.prompts)
    return RecipeData(contract, train_items, val_items, eval_items)


def encode(items: list[GoldenItem], tokenizer, prompt: PromptTemplate) -> list[Encoded]:
    from gatekeeper.runtime.prompts import encode_example

    return [Encoded(item.id, *encode_example(tokenizer, prompt.messages(item.input), answer_text(item.expected)))
            for item in items]


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
