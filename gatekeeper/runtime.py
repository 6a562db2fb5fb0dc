"""What a model is asked, and the protocol every runtime answers.

A runtime answers three kinds of typed request for a *side* of the comparison:
``generate`` (greedy text), ``loglik`` (log-probability of a fixed
continuation) and ``tokens`` (how long an example is in tokens, which needs
the tokenizer alone). Asking and scoring are separate: gates build requests, the
engine de-duplicates and batches them, and gates score the responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Union

from gatekeeper.hashing import sha256_json

Side = Literal["base", "adapter", "merged"]
Messages = tuple[tuple[str, str], ...]  # (role, content) pairs, rendered by the chat template
Progress = Callable[[int], None]  # called with how many requests just finished


@dataclass(frozen=True)
class Generate:
    """Greedy generation of at most ``max_new_tokens`` tokens."""

    messages: Messages
    max_new_tokens: int = 64
    kind: Literal["generate"] = field(default="generate", init=False)

    @property
    def key(self) -> str:
        return sha256_json({"kind": self.kind, "messages": self.messages, "max_new_tokens": self.max_new_tokens, "decoding": "greedy"})


@dataclass(frozen=True)
class LogLik:
    """Sum of log-probabilities of ``continuation`` after the rendered prompt.

    With ``messages`` empty the continuation is scored as raw text from the
    start (perplexity of a control text).
    """

    messages: Messages
    continuation: str
    kind: Literal["loglik"] = field(default="loglik", init=False)

    @property
    def key(self) -> str:
        return sha256_json({"kind": self.kind, "messages": self.messages, "continuation": self.continuation})


@dataclass(frozen=True)
class CountTokens:
    """Length in tokens of a training example as the trainer encodes it: prompt, answer, end of turn."""

    messages: Messages
    answer: str
    kind: Literal["tokens"] = field(default="tokens", init=False)

    @property
    def key(self) -> str:
        return sha256_json({"kind": self.kind, "messages": self.messages, "answer": self.answer})


Request = Union[Generate, LogLik, CountTokens]


@dataclass(frozen=True)
class LogLikResult:
    logprob: float
    tokens: int
    greedy: bool  # whether the continuation is exactly what greedy decoding picks


def messages_for(user: str, system: str | None = None) -> Messages:
    turns = [("system", system)] if system else []
    return tuple(turns + [("user", user)])


class Runtime(Protocol):
    def identity(self, side: Side) -> dict:
        """Everything besides the request that decides a response (model hashes, template, dtype)."""

    def generate(self, side: Side, requests: list[Generate], progress: Progress | None = None) -> list[str]: ...

    def loglik(self, side: Side, requests: list[LogLik], progress: Progress | None = None) -> list[LogLikResult]: ...

    def count_tokens(self, side: Side, requests: list[CountTokens], progress: Progress | None = None) -> list[int]: ...


class FakeRuntime:
    """A runtime for unit tests: answers come from tables keyed by side and user text."""

    def __init__(self, answers: dict[Side, Callable[[str], str]], name: str = "fake"):
        self.answers = answers
        self.name = name
        self.calls: list[tuple[Side, int]] = []

    def identity(self, side: Side) -> dict:
        return {"runtime": "fake", "name": self.name, "side": side}

    def generate(self, side, requests, progress=None):
        self.calls.append((side, len(requests)))
        out = [self.answers[side](dict(r.messages)["user"]) for r in requests]
        if progress:
            progress(len(requests))
        return out

    def loglik(self, side, requests, progress=None):
        self.calls.append((side, len(requests)))
        results = []
        for r in requests:
            answer = self.answers[side](dict(r.messages).get("user", ""))
            same = answer == r.continuation
            results.append(LogLikResult(-0.1 if same else -5.0, max(1, len(r.continuation.split())), same))
        if progress:
            progress(len(requests))
        return results

    def count_tokens(self, side, requests, progress=None):
        """One token per whitespace-separated word, plus one for the end of turn."""
        self.calls.append((side, len(requests)))
        counts = [sum(len(c.split()) for _, c in r.messages) + len(r.answer.split()) + 1 for r in requests]
        if progress:
            progress(len(requests))
        return counts
