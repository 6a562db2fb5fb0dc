"""Reading a side's label for an item, the way every label-judging gate reads it.

Two ways. ``generate`` parses the greedy answer (the task request every task
gate shares) and takes its label field. ``loglik`` scores the contract's
closed set of labels through one ``Choose`` request per item: each label
written as the answer begins (``{"priority": "high",``), as training writes
answers, key order kept. The most likely label is the prediction, and the
scores, normalised over the labels, are the model's confidence in each.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from gatekeeper.bundle.goldens import GoldenItem, answer_text, parse_strict_json
from gatekeeper.gating.evidence import label_of
from gatekeeper.runtime.requests import Choose

Scoring = Literal["generate", "loglik"]
SCORINGS = ("generate", "loglik")


def check_scoring(scoring: str) -> str:
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be 'generate' or 'loglik', got {scoring!r}")
    return scoring


def label_field(ctx) -> str:
    """The contract's label field; a contract without one cannot be judged on labels."""
    field = ctx.contract.label_field
    if field is None:
        raise ValueError("the contract names no label field (a property with an enum, or x-label-field)")
    return field


def label_choice(ctx, item: GoldenItem) -> Choose:
    """The contract's labels as the start of an answer, written as training writes answers (key order kept)."""
    field = label_field(ctx)
    if not isinstance(item.expected, dict) or next(iter(item.expected), None) != field:
        raise ValueError(f"scoring 'loglik' needs answers that begin with the label field {field!r}; "
                         f"item {item.id} does not")
    # Each option runs through the separator after the label (',' or '}'): the tokenizer
    # merges the closing quote with it ('",'), and a lone '"' after a label is a token
    # the model never saw there in training.
    options = []
    for label in ctx.contract.labels:
        head = answer_text({field: label})[:-1]  # '{"priority": "high"'
        options.append(answer_text({**item.expected, field: label})[: len(head) + 1])
    return Choose(ctx.prompt.messages(item.input), tuple(options))


def label_request(ctx, item: GoldenItem, scoring: str):
    """What to ask for an item's label: the shared task request, or the closed set of labels."""
    return label_choice(ctx, item) if scoring == "loglik" else ctx.task_request(item)


def ranked(scores: list[float], labels: list[str]) -> list[tuple[float, str]]:
    """(score, label), best first; a tie goes to the contract's order."""
    return sorted(zip(scores, labels), key=lambda pair: -pair[0])


def read_labels(ctx, responses, side: str, items: list[GoldenItem], scoring: str) -> tuple[list[str], list[Any]]:
    """Each item's output as a report shows it, and the label read from it (None where none can be read)."""
    if scoring == "generate":
        field = label_field(ctx)
        texts = [responses.get(side, ctx.task_request(i)) for i in items]
        return texts, [label_of(parse_strict_json(t).value, field) for t in texts]
    labels = ctx.contract.labels
    texts, predicted = [], []
    for item in items:
        order = ranked(responses.get(side, label_choice(ctx, item)), labels)
        predicted.append(order[0][1])
        texts.append(", ".join(f"{label} {score:.2f}" for score, label in order) + " (log-prob of each label)")
    return texts, predicted


def label_distribution(scores: list[float]) -> list[float]:
    """Softmax of the labels' log-probabilities: the model's probability of each label, given that it
    writes one of them. Every score -inf (no label possible) gives the uniform distribution."""
    top = max(scores)
    if top == -math.inf:
        return [1 / len(scores)] * len(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]
