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

import random
from pathlib import Path

from gatekeeper._util.hashing import sha256_json
from gatekeeper.bundle.goldens import load_jsonl
from gatekeeper.training.data import Encoded


def base_answers(model, tokenizer, path: Path, count: int, max_new_tokens: int, seed: int) -> tuple[list[Encoded], dict]:
    """``count`` prompts of the pool (a seeded sample) with the base's greedy answers, and a record of them.

    An answer cut by ``max_new_tokens`` keeps no end-of-turn token, so the
    adapter is never taught to stop where the base would have gone on.
    """
    from gatekeeper.bundle.manifest import messages_for
    from gatekeeper.runtime.hf.decoding import greedy
    from gatekeeper.runtime.prompts import render

    items = load_jsonl(path)
    if count < len(items):  # a sample across the whole pool, not its first families
        items = sorted(random.Random(seed).sample(items, count), key=lambda i: i.line)
    prompts = [tokenizer(render(tokenizer, messages_for(i.input)), add_special_tokens=False)["input_ids"] for i in items]
    answers = greedy(model, prompts, max_new_tokens, {tokenizer.eos_token_id}, tokenizer.pad_token_id, batch_size=64)
    encoded = [
        Encoded(item.id, prompt, answer + ([tokenizer.eos_token_id] if len(answer) < max_new_tokens else []))
        for item, prompt, answer in zip(items, prompts, answers)
    ]
    record = {"examples": len(encoded), "ids": [e.id for e in encoded], "answers_sha256": sha256_json([e.answer_ids for e in encoded])}
    return encoded, record
