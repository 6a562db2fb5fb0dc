"""Messages to tokens, exactly as training encodes them: one rendering for every runtime and the trainer.

The ``hf`` runtime decodes these ids itself; the ``openai`` runtime sends them as
prompts where it scores log-likelihoods, so both score the very same tokens.
"""

from __future__ import annotations

from pathlib import Path

from gatekeeper.bundle.manifest import Messages


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def render(tokenizer, messages: Messages) -> str:
    return tokenizer.apply_chat_template(
        [{"role": role, "content": content} for role, content in messages],
        tokenize=False,
        add_generation_prompt=True,
    )


def encode_example(tokenizer, messages: Messages, answer: str) -> tuple[list[int], list[int]]:
    """Prompt and answer ids exactly as training sees them.

    The answer ends with the end-of-turn token so the model learns to stop.
    """
    prompt_ids = tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return prompt_ids, answer_ids


def context_ids(tokenizer, messages: Messages) -> list[int]:
    """The ids a scored continuation follows: the rendered prompt, or the start token alone for raw
    text from the start (perplexity of a control text, asked with no messages)."""
    if not messages:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [start]
    return tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"]


def example_lengths(tokenizer, requests) -> list[int]:
    """``CountTokens`` answers: each example's length as the trainer encodes it (prompt, answer, end of turn)."""
    return [sum(map(len, encode_example(tokenizer, r.messages, r.answer))) for r in requests]


class TokenizerOnlyRequests:
    """For engines beside the reference: token counts from the base's tokenizer here, no request sent;
    the merged side, divergence and timings are the ``hf`` runtime's (``capabilities()`` declines them,
    so these are never called)."""

    tokenizer: object

    def count_tokens(self, side, requests, progress=None) -> list[int]:
        counts = example_lengths(self.tokenizer, requests)
        if progress:
            progress(len(requests))
        return counts

    def divergence(self, side, requests, progress=None):
        raise NotImplementedError("measured on the hf runtime")

    def timing(self, side, requests, progress=None):
        raise NotImplementedError("measured on the hf runtime")

    def export_merged(self, side, requests, progress=None):
        raise NotImplementedError("measured on the hf runtime")
