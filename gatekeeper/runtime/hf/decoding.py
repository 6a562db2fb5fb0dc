"""Greedy decoding for many prompts at once, without the work ``generate`` repeats.

Savings, none of which changes what greedy decoding picks:

- **Shared prefix.** Prompts built from one template start with the same
  tokens (the chat template's system turn, the task instruction: 79 of the 117
  tokens of a support-ticket prompt). That prefix runs through the model once
  per call, and its keys and values are copied to every row that starts with it.
- **Finished rows leave, waiting rows join.** ``generate`` keeps computing a
  row after its end-of-turn token until the whole batch is done, and a batch
  of 64 often ends with a few long answers decoded at a handful of rows per
  step, each step still reading every weight. Here a finished row leaves the
  batch and its cache, and once a quarter of the batch is free the next
  prompts are prefilled and join it (continuous batching).
- **Little padding.** Prompts are prefilled in groups of at most
  ``PREFILL_ROWS`` of similar length, so a group pads to its own longest
  prompt, not to the longest of the batch.
- **No full-vocabulary logits for the prompt.** Only the last position of the
  prompt is projected through the output layer.
- **Few float32 logits.** A float32 model's output layer runs in bfloat16
  on a CPU where that is native, and only the tokens the rounding could put within
  reach of a row's best get float32 logits (``gatekeeper/head.py``).
- **No copying the cache every step.** transformers' dynamic cache
  concatenates each step's keys and values onto the whole cache, which copies
  it every step (more than half of a decoding step on a CPU at batch 64). Here
  each layer writes into room reserved for the prompt and every new token.

Rows are laid out ``[padding][shared prefix][padding][own suffix][generated]``:
padding is masked out and position ids count only real tokens, so every row
sees exactly the positions and context it would see alone. Only floating-point
rounding depends on the batch (which rows share a matrix product); in float32
that decides a greedy token only where the two best logits all but tie. Such a
step (the two best logits within ``FLOAT32_TIE_MARGIN``) takes the token stock
``generate`` picks for the prompt alone: in float32 an answer then does not
depend on which prompts shared its batch.
"""

from __future__ import annotations

import collections
import contextlib
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from gatekeeper.runtime.hf.fused import FusedLora
from gatekeeper.runtime.hf.head import head_picker
from gatekeeper.runtime.hf.modeling import decoder_and_head, token_logprobs


def common_prefix_length(rows: list[list[int]], own: int = 1) -> int:
    """Tokens every row starts with, leaving each row at least ``own`` tokens of its own."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - own and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


# Batching moves a float32 logit of the embedded model by at most 8.5e-5 against the
# prompt run alone (measured over 600 steps), so a gap between the two best tokens
# of more than twice that cannot flip; 1e-3 leaves room for deeper or wider models.
FLOAT32_TIE_MARGIN = 1e-3
PREFILL_ROWS = 16  # prompts prefilled together: few enough that a group of similar lengths pads little
KEPT_PREFIXES = 8  # shared prefixes whose keys and values a call keeps for later groups


class _ReservedLayer(DynamicLayer):
    """A dynamic cache layer that writes into reserved room instead of concatenating.

    ``keys`` and ``values`` stay views of the filled part, so everything that
    reads a ``DynamicLayer`` (lengths, masks) works unchanged.
    """

    def __init__(self, room: int):
        super().__init__()
        self.room, self.filled = room, 0

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, filled: int) -> _ReservedLayer:
        """A layer over existing storage whose first ``filled`` positions are in use."""
        layer = cls(keys.shape[-2])
        layer.lazy_initialization(keys, values)
        layer._keys, layer._values, layer.filled = keys, values, filled
        layer.keys, layer.values = keys[..., :filled, :], values[..., :filled, :]
        return layer

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            shape = (*key_states.shape[:2], max(self.room, key_states.shape[-2]), key_states.shape[-1])
            self._keys = key_states.new_empty(shape)
            self._values = value_states.new_empty(shape[:-1] + value_states.shape[-1:])
        end = self.filled + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # more than reserved: grow, as the dynamic cache would
            self._keys, self._values = (torch.cat([t, t.new_empty((*t.shape[:2], end, t.shape[-1]))], dim=-2)
                                        for t in (self._keys, self._values))
        self._keys[..., self.filled : end, :] = key_states
        self._values[..., self.filled : end, :] = value_states
        self.filled = end
        self.keys, self.values = self._keys[..., :end, :], self._values[..., :end, :]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.filled:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self.keys, self.values = self._keys[..., : self.filled, :], self._values[..., : self.filled, :]

    def batch_select_indices(self, indices) -> None:
        if self.filled:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self.keys, self.values = self._keys[..., : self.filled, :], self._values[..., : self.filled, :]


class _JointCache:
    """Each layer's keys and values for a batch put together from several parts (rows already decoding,
    groups being prefilled), allocated when the first part writes to the layer.

    A part occupies a block of rows, right-aligned: the columns left of it are
    zeros (masked out, but never uninitialised memory: NaN * 0 is NaN).
    """

    def __init__(self, rows: int, room: int):
        self.rows, self.room = rows, room
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def block(self, index: int, keys: torch.Tensor, values: torch.Tensor, rows, column: int):
        """Layer ``index``'s keys and values for ``rows`` from ``column`` on, the columns left of it
        zeroed; the layer's storage is allocated like ``keys`` and ``values`` on first use."""
        if index not in self.layers:
            self.layers[index] = tuple(t.new_empty((self.rows, t.shape[1], self.room, t.shape[-1])) for t in (keys, values))
        for t in self.layers[index]:
            t[rows, :, :column] = 0
        return tuple(t[rows, :, column:] for t in self.layers[index])

    def place(self, index: int, keys, values, row: int, column: int) -> None:
        """Copy existing keys and values in at ``row``, starting at ``column``."""
        for new, old in zip(self.block(index, keys, values, slice(row, row + len(keys)), column), (keys, values)):
            new[..., : old.shape[-2], :] = old

    def group_cache(self, config, rows: slice, column: int):
        """A cache whose layers write rows ``rows`` of this one, from ``column`` on."""
        cache = DynamicCache(config=config)
        cache.layers = [_GroupLayer(self, index, rows, column) for index in range(len(cache.layers))]
        return cache


class _GroupLayer(_ReservedLayer):
    """A reserved cache layer whose room is a block of a ``_JointCache``."""

    def __init__(self, joint: _JointCache, index: int, rows: slice, column: int):
        super().__init__(room=0)
        self.joint, self.index, self.rows, self.column = joint, index, rows, column

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._keys, self._values = self.joint.block(self.index, key_states, value_states, self.rows, self.column)
        return super().update(key_states, value_states, *args, **kwargs)


def reserved_cache(config, room: int):
    """A cache whose plain (full-attention) layers reserve ``room`` positions; other layer kinds stay stock."""
    cache = DynamicCache(config=config)
    cache.layers = [_ReservedLayer(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def joinable(config) -> bool:
    """Whether every cache layer is a plain one: rows of two batches can then be put in one cache.

    (A sliding-window layer keeps a window that depends on the row's length.)
    """
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)


def tie_margin(model) -> float | None:
    """The logit gap below which a greedy pick is settled alone: float32 models only.

    In bfloat16 batching moves logits by about their rounding step (0.125 at a
    logit of 20): 3% of the embedded model's picks are exact ties there, and
    settling them all would cost more than batching saves.
    """
    decoder, head = decoder_and_head(model)
    quantized = getattr(decoder.config, "quantization_config", None) is not None
    return FLOAT32_TIE_MARGIN if head.weight.dtype == torch.float32 and not quantized else None


def _forward(decoding: _Decoding, ids, mask, positions, cache):
    hidden = decoding.parts[0](input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                               use_cache=True)
    return decoding.pick(hidden.last_hidden_state[:, -1])


def token_alone(model, row: list[int], answer: list[int], pad_id: int) -> int | None:
    """The token stock ``generate`` picks after ``answer`` with the prompt ``row`` run alone, at batch one.

    The plain path every batched answer is held to; it settles near-ties. It
    regenerates ``answer`` on the way (a stop token kept out of it, as the
    batch kept it out), so it costs one prompt's decoding up to this point.
    None where the prompt alone does not write ``answer``: an earlier pick
    moved by more than the margin, and there is no tie left to settle here.
    """
    ids = torch.tensor([row], device=model.device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=pad_id,
                         min_new_tokens=len(answer), max_new_tokens=len(answer) + 1)
    new = out[0, len(row):].tolist()
    return new[-1] if new[:-1] == answer else None


def _prefix_states(decoder, prefix: list[int], kept: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values for ``prefix`` at batch one, from ``kept`` where an earlier group had them.

    A kept shorter prefix is extended by the tokens it lacks rather than
    recomputed: groups of one template differ at most by a word or two.
    """
    key = tuple(prefix)
    if key not in kept:
        start = max((k for k in kept if len(k) < len(key) and key[: len(k)] == k), key=len, default=())
        cache = reserved_cache(decoder.config, len(key))
        for layer, (keys, values) in zip(cache.layers, kept.get(start, [])):
            layer.update(keys, values)
        rest = torch.tensor([key[len(start) :]], device=decoder.device)
        decoder(input_ids=rest, attention_mask=torch.ones((1, len(key)), dtype=torch.long, device=decoder.device),
                position_ids=torch.arange(len(start), len(key), device=decoder.device)[None],
                cache=cache, use_cache=True)
        if len(kept) >= KEPT_PREFIXES:
            del kept[next(iter(kept))]
        kept[key] = [(layer.keys, layer.values) for layer in cache.layers]
    return kept[key]


def _layout(rows: list[list[int]], own: int = 1) -> tuple[int, int]:
    """The shared prefix's length and the longest own suffix: a prefilled group is their sum wide."""
    shared = common_prefix_length(rows, own)
    return shared, max(len(r) - shared for r in rows)


def _prefill(parts, rows: list[list[int]], extra: int, pad_id: int, kept: dict | None = None, cache=None,
             last: int = 1):
    """Run every prompt once: the shared prefix as a batch of one, then each row's own suffix.

    Returns the cache (room for ``extra`` more positions, or the ``cache``
    given, whose room must suffice), the attention mask so far, each row's
    hidden states at its ``last`` positions, shape (rows, last, hidden), and
    the position its next token takes. With ``kept`` (given
    only for a ``joinable`` model) the prefix's keys and values are reused
    across calls of one decoding run.
    """
    decoder, _ = parts
    device = decoder.device
    batch = len(rows)
    shared, width = _layout(rows, own=last)
    cache = cache if cache is not None else reserved_cache(decoder.config, shared + width + extra)
    if shared and kept is not None:
        for layer, (keys, values) in zip(cache.layers, _prefix_states(decoder, rows[0][:shared], kept)):
            layer.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1))
    elif shared:
        prefix = torch.tensor([rows[0][:shared]], device=device)
        decoder(input_ids=prefix, attention_mask=torch.ones_like(prefix),
                position_ids=torch.arange(shared, device=device)[None], cache=cache, use_cache=True)
        cache.batch_repeat_interleave(batch)

    ids = torch.full((batch, width), pad_id, device=device)
    tail_mask = torch.zeros((batch, width), dtype=torch.long, device=device)
    for i, row in enumerate(rows):  # left padding inside the suffix block
        tail = row[shared:]
        ids[i, width - len(tail) :] = torch.tensor(tail, device=device)
        tail_mask[i, width - len(tail) :] = 1
    mask = torch.cat([torch.ones((batch, shared), dtype=torch.long, device=device), tail_mask], dim=1)
    positions = (shared + tail_mask.cumsum(-1) - 1).clamp(min=0)
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
    return cache, mask, hidden.last_hidden_state[:, -last:], positions[:, -1] + 1


AUTO = "auto"


@torch.inference_mode()
def greedy(model, rows: list[list[int]], max_new_tokens: int, stop_ids: set[int], pad_id: int, *,
           batch_size: int | None = None, finished: Callable[[int], None] | None = None,
           margin: float | None | str = AUTO) -> list[list[int]]:
    """Greedy continuations of ``rows`` (token ids), each ending before its first stop token.

    At most ``batch_size`` rows decode at once (all of them when None). Once a
    quarter of the batch has finished, waiting rows are prefilled and join it.
    Rows start shortest first, so that each group pads little and shares its
    longest prefix. ``finished(i)`` is called as row ``i`` completes.

    Where a row's two best logits are within ``margin`` of each other, the
    row takes the token it gets alone (``token_alone``); by default
    ``tie_margin(model)``, None to never.
    """
    outputs: list[list[int]] = [[] for _ in rows]
    if max_new_tokens < 1 or not rows:
        return outputs
    parts = decoder_and_head(model)
    margin = tie_margin(model) if margin == AUTO else margin
    fused = FusedLora(model)
    decoding = _Decoding(parts, head_picker(parts[1], margin), margin, max_new_tokens, stop_ids, pad_id, finished,
                         lambda i, answer: fused.plain(token_alone, model, rows[i], answer, pad_id))
    batch_size = batch_size or len(rows)
    can_join = joinable(parts[0].config)
    waiting = collections.deque(sorted(range(len(rows)), key=lambda i: len(rows[i])))
    kept: dict | None = {} if can_join else None
    live: _Live | None = None
    with _collector_paused(), fused:
        while waiting or live is not None:
            free = batch_size - (live.size if live is not None else 0)
            if waiting and (live is None or (can_join and free >= min(len(waiting), max(1, batch_size // 4)))):
                group = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                step = PREFILL_ROWS if can_join else len(group)
                live = _Live.admit(decoding, live, rows, [group[k : k + step] for k in range(0, len(group), step)], kept)
            live = live.advance(decoding, outputs)
    return outputs


@dataclass
class _Decoding:
    """What every step of one ``greedy`` call needs besides the rows."""

    parts: tuple
    pick: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]  # last hidden states -> (tokens, tied)
    margin: float | None
    max_new_tokens: int
    stop_ids: set[int]
    pad_id: int
    finished: Callable[[int], None] | None
    alone: Callable[[int, list[int]], int | None]  # the next token of row i after an answer, the row run by itself


class _Block(NamedTuple):
    """A block of rows of a batch being put together: rows already decoding, or a prefilled group."""

    mask: torch.Tensor
    position: torch.Tensor
    token: torch.Tensor
    tied: torch.Tensor | None
    rows: list[int]


@dataclass
class _Live:
    """The rows decoding now: their cache, mask, next positions and newest (not yet recorded) tokens.

    A finished row stays in the batch, its answer complete, until enough rows
    have finished to be worth copying the cache without them (or until the
    next join, which copies it anyway): at batch 64 dropping a row copies the
    whole cache, dozens of times the cost of computing one wasted position.
    """

    cache: DynamicCache
    mask: torch.Tensor  # (rows, width), 1 over each row's real tokens
    position: torch.Tensor  # (rows,) the position each row's next token takes
    token: torch.Tensor  # (rows,) each row's newest token
    tied: torch.Tensor | None  # (rows,) whether that token all but tied with the runner-up
    rows: list[int]  # which of the caller's rows; -1 once finished

    @property
    def size(self) -> int:
        """Rows still decoding."""
        return sum(r >= 0 for r in self.rows)

    def unfinished(self) -> torch.Tensor:
        return torch.tensor([k for k, r in enumerate(self.rows) if r >= 0], device=self.mask.device)

    @classmethod
    def start(cls, decoding: _Decoding, rows, group: list[int], kept: dict | None) -> _Live:
        """Prefill the prompts ``group`` names; their first tokens come from the prompts' last positions."""
        cache, mask, last, position = _prefill(decoding.parts, [rows[i] for i in group], decoding.max_new_tokens,
                                               decoding.pad_id, kept)
        token, tied = decoding.pick(last[:, -1])
        return cls(cache, mask, position, token, tied, list(group))

    @classmethod
    def admit(cls, decoding: _Decoding, live: _Live | None, rows, groups: list[list[int]], kept: dict | None) -> _Live:
        """One batch of the unfinished rows of ``live`` and the prompts ``groups`` name, each group prefilled
        straight into its place in the batch's cache (no copy of a group's own cache).

        Every row is right-aligned in a cache as wide as the widest: columns no
        live row uses any more (the prompts of rows that have left) are
        dropped, and the new padding holds zeros and is masked out.
        """
        if live is None and len(groups) == 1:  # the group's own cache is the batch's
            return cls.start(decoding, rows, groups[0], kept)
        config, extra = decoding.parts[0].config, decoding.max_new_tokens
        blocks: list[_Block] = []  # top to bottom
        if live is not None:
            # a batch whose rows all go on is read through a view; otherwise its unfinished rows are picked
            pick = slice(None) if live.size == len(live.rows) else live.unfinished()
            mask = live.mask[pick]
            first = int(torch.nonzero(mask.any(0))[0])  # the columns before held prompts of rows that left
            blocks.append(_Block(mask[:, first:], live.position[pick], live.token[pick],
                                 None if live.tied is None else live.tied[pick], [r for r in live.rows if r >= 0]))
        widths = [sum(_layout([rows[i] for i in g])) for g in groups]
        width = max(widths + [b.mask.shape[1] for b in blocks])
        joint = _JointCache(sum(len(b.rows) for b in blocks) + sum(map(len, groups)), width + extra)
        if live is not None:
            for index, layer in enumerate(live.cache.layers):
                joint.place(index, layer.keys[pick, :, first:], layer.values[pick, :, first:], 0, width - blocks[0].mask.shape[1])
        offset = len(blocks[0].rows) if blocks else 0
        for group, group_width in zip(groups, widths):
            cache = joint.group_cache(config, slice(offset, offset + len(group)), width - group_width)
            _, mask, last, position = _prefill(decoding.parts, [rows[i] for i in group], extra, decoding.pad_id, kept, cache)
            blocks.append(_Block(mask, position, *decoding.pick(last[:, -1]), group))
            offset += len(group)
        full_mask = blocks[0].mask.new_zeros((offset, width))
        row = 0
        for block in blocks:
            full_mask[row : row + len(block.mask), width - block.mask.shape[1] :] = block.mask
            row += len(block.mask)
        cache = DynamicCache(config=config)
        cache.layers = [_ReservedLayer.holding(*joint.layers[index], width) for index in range(len(cache.layers))]
        position, token = (torch.cat([getattr(b, name) for b in blocks]) for name in ("position", "token"))
        tied = None if decoding.margin is None else torch.cat([b.tied for b in blocks])
        return cls(cache, full_mask, position, token, tied, [r for b in blocks for r in b.rows])

    def advance(self, decoding: _Decoding, outputs) -> _Live | None:
        """Record each row's newest token, mark finished rows, and run one more position.

        A row whose newest token all but tied takes the one it picks alone
        instead. None when no row is left.
        """
        tied = self.tied.tolist() if self.tied is not None else [False] * len(self.rows)
        for k, (row, token) in enumerate(zip(self.rows, self.token.tolist())):
            if row < 0:
                continue
            alone = decoding.alone(row, outputs[row]) if tied[k] else None
            if alone is not None:
                token = alone
                self.token[k] = token  # the token fed to the next step
            stopped = token in decoding.stop_ids
            if not stopped:
                outputs[row].append(token)
            if stopped or len(outputs[row]) == decoding.max_new_tokens:
                self.rows[k] = -1
                if decoding.finished:
                    decoding.finished(row)
        left = self.size
        if left == 0:
            return None
        if len(self.rows) - left >= max(1, len(self.rows) // 8):  # enough finished rows to drop them
            keep = self.unfinished()
            self.cache.batch_select_indices(keep)
            self.mask, self.position, self.token = (t[keep] for t in (self.mask, self.position, self.token))
            self.rows = [r for r in self.rows if r >= 0]
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        self.token, self.tied = _forward(decoding, self.token[:, None], self.mask, self.position[:, None], self.cache)
        self.position = self.position + 1
        return self


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while decoding: every step allocates enough
    small objects to trigger it, and each full pass walks every object the loaded model
    and transformers hold (3% of a CPU gate run). Nothing cyclic is made in the loop."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@torch.inference_mode()
def option_logprobs(model, rows: list[list[int]], options: list[list[int]], pad_id: int) -> torch.Tensor:
    """Summed log-probability of each option's tokens after each prompt, shape (rows, options), float32.

    Scoring a closed set of answers without generating. The tokens every
    option starts with (``{"priority": "`` before each label) run once with
    each prompt (shared prefix, then their own suffixes), which scores them
    and gives every option's first token of its own; the cache is then copied
    once per option and all options' remaining tokens run in one more pass.
    """
    import torch.nn.functional as F

    parts = decoder_and_head(model)
    decoder, head = parts
    device = model.device
    batch, count = len(rows), len(options)
    lead = options[0][: common_prefix_length(options)]
    options = [o[len(lead) :] for o in options]
    longest = max(len(o) for o in options)
    cache, mask, last, next_position = _prefill(parts, [r + lead for r in rows], longest, pad_id, last=len(lead) + 1)
    scores = F.log_softmax(head(last[:, -1]).float(), dim=-1)[:, [o[0] for o in options]]
    if lead:
        wanted = torch.tensor(lead, device=device).repeat(batch)
        logprobs, _ = token_logprobs(head, last[:, :-1].reshape(batch * len(lead), -1), wanted)
        scores = scores + logprobs.view(batch, len(lead)).sum(-1, keepdim=True)
    if longest == 1:
        return scores
    cache.batch_repeat_interleave(count)  # row b * count + j continues prompt b with option j
    width = longest - 1
    # Option j feeds its tokens but the last and is scored on its tokens but the first;
    # right padding, which later positions never reach back from, and -1 targets there.
    ids = torch.full((count, width), pad_id, device=device)
    targets = torch.full((count, width), -1, device=device)
    for j, option in enumerate(options):
        ids[j, : len(option) - 1] = torch.tensor(option[:-1], device=device)
        targets[j, : len(option) - 1] = torch.tensor(option[1:], device=device)
    ids, targets = ids.repeat(batch, 1), targets.repeat(batch, 1)
    mask = torch.cat([mask.repeat_interleave(count, dim=0),
                      torch.ones((batch * count, width), dtype=torch.long, device=device)], dim=1)
    positions = next_position.repeat_interleave(count)[:, None] + torch.arange(width, device=device)[None]
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                     use_cache=True).last_hidden_state
    picked = targets >= 0
    logprobs, _ = token_logprobs(head, hidden[picked], targets[picked])
    rest = torch.zeros(batch * count, device=device).index_add_(0, torch.nonzero(picked)[:, 0], logprobs)
    return scores + rest.view(batch, count)
