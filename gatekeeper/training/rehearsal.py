"""Rehearsal: ordinary requests answered by the base itself, mixed into training.

An adapter trained only on one task learns that every request is that task
(the first support-ticket demo candidate kept 22% of the regression set its
base answers right).
The rehearsal pool holds other requests; before training, the base answers them
greedily, and each training batch carries a few of those pairs. The loss on
them pulls the adapter towards the base's own behaviour away from the task:
self-distillation, with no data the base did not produce.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from gatekeeper._util.files import write_atomic
from gatekeeper._util.hashing import sha256_file, sha256_json
from gatekeeper.bundle.base import cache_root
from gatekeeper.bundle.goldens import load_jsonl
from gatekeeper.training.data import Encoded, check_lengths


def base_answers(model, tokenizer, path: Path, count: int, max_new_tokens: int, seed: int,
                 cache_key: dict | None = None) -> tuple[list[Encoded], dict]:
    """``count`` prompts of the pool (a seeded sample) with the base's greedy answers, and a record of them.

    An answer cut by ``max_new_tokens`` keeps no end-of-turn token, so the
    adapter is never taught to stop where the base would have gone on.

    With ``cache_key`` (what identifies the base as it computes: its hash, the
    precision, the device) the answers are kept in the cache directory and reused
    by the next run with the same base, pool, sample and length: every candidate
    of one base, and every point of a sweep, asks the base once.
    """
    from gatekeeper.bundle.manifest import messages_for
    from gatekeeper.runtime.prompts import render

    items = load_jsonl(path)
    if count < len(items):  # a sample across the whole pool, not its first families
        items = sorted(random.Random(seed).sample(items, count), key=lambda i: i.line)
    prompts = [tokenizer(render(tokenizer, messages_for(i.input)), add_special_tokens=False)["input_ids"] for i in items]
    stored = None
    if cache_key is not None:
        key = sha256_json({**cache_key, "pool": sha256_file(path), "prompts": prompts,
                           "max_new_tokens": max_new_tokens, "eos": tokenizer.eos_token_id})
        stored = cache_root() / "rehearsal" / f"{key}.json"
    answers = _read(stored, len(prompts))
    if answers is None:
        from gatekeeper.runtime.hf.decoding import greedy

        answers = greedy(model, prompts, max_new_tokens, {tokenizer.eos_token_id}, tokenizer.pad_token_id, batch_size=64)
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(stored, json.dumps(answers))
    encoded = [
        Encoded(item.id, prompt, answer + ([tokenizer.eos_token_id] if len(answer) < max_new_tokens else []))
        for item, prompt, answer in zip(items, prompts, answers)
    ]
    record = {"examples": len(encoded), "ids": [e.id for e in encoded], "answers_sha256": sha256_json([e.answer_ids for e in encoded])}
    return encoded, record


def _read(stored: Path | None, expected: int) -> list[list[int]] | None:
    """Cached answers, or None where there are none or the file is not what this cache writes."""
    if stored is None or not stored.is_file():
        return None
    try:
        answers = json.loads(stored.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    valid = isinstance(answers, list) and len(answers) == expected and all(
        isinstance(a, list) and all(isinstance(t, int) for t in a) for a in answers)
    return answers if valid else None


def rehearsal_for(recipe, root: Path, model, tokenizer, *, base_sha256: str, precision: str, device_type: str,
                  steps: int | None, base_side, computing) -> tuple[list[Encoded], dict | None]:
    """The recipe's rehearsal rows, answered by the base (``base_side``: the adapter switched off, in
    eval mode) before the first step, and their record; ([], None) without ``data.rehearsal``.
    ``steps`` bounds how many rows a run can use (None: the whole pool)."""
    rehearsal = recipe.data.rehearsal
    if rehearsal is None:
        return [], None
    settings = recipe.training
    training = model.training
    model.eval()
    with base_side(model), computing():
        wanted = (steps or 10**6) * settings.grad_accum * rehearsal.per_batch
        rows, record = base_answers(
            model, tokenizer, root / rehearsal.prompts, wanted, rehearsal.max_new_tokens, settings.seed,
            cache_key={"base": base_sha256, "method": recipe.method, "precision": precision, "device": device_type})
    model.train(training)
    record.update(mode=rehearsal.mode, **({"weight": rehearsal.weight} if rehearsal.mode == "distill" else {}))
    check_lengths(rows, settings.max_seq_len, root / rehearsal.prompts)
    return rows, record
