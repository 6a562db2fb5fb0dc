"""What a model is asked, and the protocol every runtime answers.

A runtime answers typed requests for a *side* of the comparison, among them
``generate`` (greedy text), ``loglik`` (log-probability of a fixed
continuation), ``choose`` (log-probabilities of a closed set of answers) and
``tokens`` (how long an example is in tokens, which needs the tokenizer
alone). Asking and scoring are separate: gates build requests, the engine
de-duplicates and batches them, and gates score the responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Union

from gatekeeper._util.hashing import sha256_json
from gatekeeper.bundle.manifest import Messages, messages_for  # noqa: F401  (request authors build messages with it)

Side = Literal["base", "adapter", "merged", "reference_base", "reference_adapter"]
"""``reference_*``: base and adapter on the ``hf`` reference runtime, beside a serving engine under check."""
REFERENCE_SIDES: dict[str, str] = {"reference_base": "base", "reference_adapter": "adapter"}
RequestKind = Literal["generate", "loglik", "choose", "tokens", "divergence", "timing", "export"]
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
class Choose:
    """Log-probability of each answer of a closed set after the rendered prompt, with no generation.

    Answered with one summed log-probability per option, in order: one pass
    over the prompt and one over every option together, where free generation
    takes a pass per new token.
    """

    messages: Messages
    options: tuple[str, ...]
    kind: Literal["choose"] = field(default="choose", init=False)

    @property
    def key(self) -> str:
        return sha256_json({"kind": self.kind, "messages": self.messages, "options": self.options})


@dataclass(frozen=True)
class CountTokens:
    """Length in tokens of a training example as the trainer encodes it: prompt, answer, end of turn."""

    messages: Messages
    answer: str
    kind: Literal["tokens"] = field(default="tokens", init=False)

    @property
    def key(self) -> str:
        return sha256_json({"kind": self.kind, "messages": self.messages, "answer": self.answer})


@dataclass(frozen=True)
class Divergence:
    """How a merged model differs from the unmerged adapter on one prompt, asked on the ``merged`` side.

    Answered with summary numbers, never logit vectors (49k floats a position
    for SmolLM2 would swamp the cache): both models run over the prompt and the
    adapter's greedy continuation, and each position's next-token distributions
    are compared. ``variant`` ``requantized`` is the merge re-quantised to the
    serving 4-bit format (QLoRA); ``merged_from`` judges a merged model directory
    made elsewhere (an export pipeline's) instead of merging here, and its
    weights' hash keeps the cache honest when the files change.
    """

    messages: Messages
    max_new_tokens: int = 64
    variant: Literal["merged", "requantized"] = "merged"
    merged_from: str = ""
    merged_sha256: str = ""
    kind: Literal["divergence"] = field(default="divergence", init=False)

    @property
    def key(self) -> str:
        return sha256_json({"kind": self.kind, "messages": self.messages, "max_new_tokens": self.max_new_tokens,
                            "variant": self.variant, "merged_from": self.merged_from, "merged_sha256": self.merged_sha256})


@dataclass(frozen=True)
class Timing:
    """Latency, time to first token, throughput and peak memory of one prompt, measured now.

    Never answered from the response cache: a timing is a measurement of the
    machine at the time of the check, not a property of the model.
    """

    messages: Messages
    max_new_tokens: int = 64
    repeats: int = 3
    warmup: int = 2
    kind: Literal["timing"] = field(default="timing", init=False)

    @property
    def key(self) -> str:
        return sha256_json({"kind": self.kind, "messages": self.messages, "max_new_tokens": self.max_new_tokens,
                            "repeats": self.repeats, "warmup": self.warmup})


@dataclass(frozen=True)
class ExportMerged:
    """Write the merged model (safetensors, with its tokenizer) into ``directory``; answered with each file's sha256.

    Never cached: the files it writes are the point.
    """

    directory: str
    kind: Literal["export"] = field(default="export", init=False)

    @property
    def key(self) -> str:
        return sha256_json({"kind": self.kind, "directory": self.directory})


Request = Union[Generate, LogLik, Choose, CountTokens, Divergence, Timing, ExportMerged]


@dataclass(frozen=True)
class LogLikResult:
    logprob: float
    tokens: int
    greedy: bool  # whether the continuation is exactly what greedy decoding picks


@dataclass(frozen=True)
class DivergenceResult:
    output: str  # this side's greedy output
    reference_output: str  # the unmerged adapter's greedy output
    positions: int  # next-token distributions compared: the prompt's last position and each generated one
    max_abs_logit_diff: float
    max_rel_logit_diff: float  # max |a - b| / (1 + |a|): torch.allclose(atol=t, rtol=t) holds iff it is <= t
    max_prob_diff: float  # largest |p - q| over the vocabulary and positions
    max_kl: float  # KL(adapter || this side), nats, worst position
    mean_kl: float
    top1_agreement: float  # share of positions whose most likely token is the same


@dataclass(frozen=True)
class TimingResult:
    latency_ms: list[float]  # one per repeat, the whole request
    first_token_ms: list[float]  # one per repeat
    new_tokens: int  # tokens generated per repeat
    peak_mib: float  # peak memory while this side was measured
    memory: str  # what peak_mib measures: "cuda allocated" or "process RSS"
    device: str
