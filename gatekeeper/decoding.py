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
- **No copying the cache every step.** transformers' dynamic cache
  concatenates each step's keys and values onto the whole cache, which copies
  it every step (more than half of a decoding step on a CPU at batch 64). Here
  each layer writes into room reserved for the prompt and every new token.

Rows are laid out ``[padding][shared prefix][padding][own suffix][generated]``:
padding is masked out and position ids count only real tokens, so every row
sees exactly the positions and context it would see alone. Only floating-point
rounding depends on the batch (which rows share a matrix product); in float32
that decides a greedy token only where the two best logits all but tie.
"""

from __future__ import annotations

import collections
import contextlib
import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from gatekeeper.modeling import decoder_and_head, token_logprobs


def common_prefix_length(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


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


def _forward(parts, ids, mask, positions, cache):
    # The body, then the output layer on each row's last position as a 2-D product: with
    # ``logits_to_keep`` a bfloat16 CPU matmul broadcasts the (576 x 49k) head to every row first.
    decoder, head = parts
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    return head(hidden.last_hidden_state[:, -1]).argmax(-1), cache


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
                past_key_values=cache, use_cache=True)
        if len(kept) >= KEPT_PREFIXES:
            del kept[next(iter(kept))]
        kept[key] = [(layer.keys, layer.values) for layer in cache.layers]
    return kept[key]


def _prefill(parts, rows: list[list[int]], extra: int, pad_id: int, kept: dict | None = None):
    """Run every prompt once: the shared prefix as a batch of one, then each row's own suffix.

    Returns the cache (room for ``extra`` more positions), the attention mask
    so far, each row's last hidden state and the position its next token takes.
    With ``kept`` (given only for a ``joinable`` model) the prefix's keys and
    values are reused across calls of one decoding run.
    """
    decoder, _ = parts
    device = decoder.device
    batch = len(rows)
    shared = common_prefix_length(rows)
    width = max(len(r) - shared for r in rows)
    cache = reserved_cache(decoder.config, shared + width + extra)
    if shared and kept is not None:
        for layer, (keys, values) in zip(cache.layers, _prefix_states(decoder, rows[0][:shared], kept)):
            layer.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1))
    elif shared:
        prefix = torch.tensor([rows[0][:shared]], device=device)
        decoder(input_ids=prefix, attention_mask=torch.ones_like(prefix),
                position_ids=torch.arange(shared, device=device)[None], past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(batch)

    ids = torch.full((batch, width), pad_id, device=device)
    tail_mask = torch.zeros((batch, width), dtype=torch.long, device=device)
    for i, row in enumerate(rows):  # left padding inside the suffix block
        tail = row[shared:]
        ids[i, width - len(tail) :] = torch.tensor(tail, device=device)
        tail_mask[i, width - len(tail) :] = 1
    mask = torch.cat([torch.ones((batch, shared), dtype=torch.long, device=device), tail_mask], dim=1)
    positions = (shared + tail_mask.cumsum(-1) - 1).clamp(min=0)
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    return cache, mask, hidden.last_hidden_state[:, -1], positions[:, -1] + 1


@torch.inference_mode()
def greedy(model, rows: list[list[int]], max_new_tokens: int, stop_ids: set[int], pad_id: int, *,
           batch_size: int | None = None, finished: Callable[[int], None] | None = None) -> list[list[int]]:
    """Greedy continuations of ``rows`` (token ids), each ending before its first stop token.

    At most ``batch_size`` rows decode at once (all of them when None). Once a
    quarter of the batch has finished, waiting rows are prefilled and join it.
    Rows start shortest first, so that each group pads little and shares its
    longest prefix. ``finished(i)`` is called as row ``i`` completes.
    """
    outputs: list[list[int]] = [[] for _ in rows]
    if max_new_tokens < 1 or not rows:
        return outputs
    parts = decoder_and_head(model)
    batch_size = batch_size or len(rows)
    can_join = joinable(parts[0].config)
    waiting = collections.deque(sorted(range(len(rows)), key=lambda i: len(rows[i])))
    kept: dict | None = {} if can_join else None
    live: _Live | None = None
    with _collector_paused():
        while waiting or live is not None:
            free = batch_size - (live.size if live is not None else 0)
            if waiting and (live is None or (can_join and free >= min(len(waiting), max(1, batch_size // 4)))):
                group = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                step = PREFILL_ROWS if can_join else len(group)
                fresh = [_Live.start(parts, rows, group[k : k + step], max_new_tokens, pad_id, kept)
                         for k in range(0, len(group), step)]
                live = _Live.join(parts, ([live] if live is not None else []) + fresh, max_new_tokens)
            live = live.advance(parts, outputs, max_new_tokens, stop_ids, finished)
    return outputs


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
    rows: list[int]  # which of the caller's rows; -1 once finished

    @property
    def size(self) -> int:
        """Rows still decoding."""
        return sum(r >= 0 for r in self.rows)

    def unfinished(self) -> torch.Tensor:
        return torch.tensor([k for k, r in enumerate(self.rows) if r >= 0], device=self.mask.device)

    @classmethod
    def start(cls, parts, rows, group: list[int], max_new_tokens: int, pad_id: int, kept: dict | None) -> _Live:
        """Prefill the prompts ``group`` names; their first tokens come from the prompts' last positions."""
        cache, mask, last, position = _prefill(parts, [rows[i] for i in group], max_new_tokens, pad_id, kept)
        token = parts[1](last).argmax(-1)  # the output layer on the last positions alone (see _forward)
        return cls(cache, mask, position, token, list(group))

    @classmethod
    def join(cls, parts, batches: list[_Live], max_new_tokens: int) -> _Live:
        """One batch of the unfinished rows of several: each row right-aligned in a cache as wide as the widest.

        Columns no row uses any more (the prompts of rows that have left) are
        dropped; the new padding holds zeros and is masked out.
        """
        if len(batches) == 1 and batches[0].size == len(batches[0].rows):
            return batches[0]
        # a batch whose rows all go on is read through a view; otherwise its unfinished rows are picked
        picks = [slice(None) if b.size == len(b.rows) else b.unfinished() for b in batches]
        masks = [b.mask[pick] for b, pick in zip(batches, picks)]
        firsts = [int(torch.nonzero(m.any(0))[0]) for m in masks]
        width = max(m.shape[1] - first for m, first in zip(masks, firsts))
        spans = []  # (first row, rows, first column) of each batch in the joined one
        for m, first in zip(masks, firsts):
            spans.append((spans[-1][0] + spans[-1][1] if spans else 0, len(m), width - (m.shape[1] - first)))
        size = spans[-1][0] + spans[-1][1]
        layers = []
        for per_batch in zip(*(b.cache.layers for b in batches)):
            keys, values = (t.new_empty((size, t.shape[1], width + max_new_tokens, t.shape[-1]))
                            for t in (per_batch[0].keys, per_batch[0].values))
            for layer, pick, first, (row, count, column) in zip(per_batch, picks, firsts, spans):
                for new, old in ((keys, layer.keys), (values, layer.values)):
                    new[row : row + count, :, :column] = 0  # masked, but never uninitialised memory (NaN * 0 is NaN)
                    new[row : row + count, :, column:width] = old[pick, :, first:]
            layers.append(_ReservedLayer.holding(keys, values, width))
        mask = masks[0].new_zeros((size, width))
        for m, first, (row, count, column) in zip(masks, firsts, spans):
            mask[row : row + count, column:] = m[:, first:]
        cache = DynamicCache(config=parts[0].config)
        cache.layers = layers
        position, token = (torch.cat([getattr(b, name)[pick] for b, pick in zip(batches, picks)])
                           for name in ("position", "token"))
        return cls(cache, mask, position, token, [r for b in batches for r in b.rows if r >= 0])

    def advance(self, parts, outputs, max_new_tokens, stop_ids, finished) -> _Live | None:
        """Record each row's newest token, mark finished rows, and run one more position.

        None when no row is left.
        """
        for k, (row, token) in enumerate(zip(self.rows, self.token.tolist())):
            if row < 0:
                continue
            stopped = token in stop_ids
            if not stopped:
                outputs[row].append(token)
            if stopped or len(outputs[row]) == max_new_tokens:
                self.rows[k] = -1
                if finished:
                    finished(row)
        left = self.size
        if left == 0:
            return None
        if len(self.rows) - left >= max(1, len(self.rows) // 8):  # enough finished rows to drop them
            keep = self.unfinished()
            self.cache.batch_select_indices(keep)
            self.mask, self.position, self.token = (t[keep] for t in (self.mask, self.position, self.token))
            self.rows = [r for r in self.rows if r >= 0]
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        self.token, _ = _forward(parts, self.token[:, None], self.mask, self.position[:, None], self.cache)
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

    Scoring a closed set of answers without generating: the prompts run once
    (shared prefix, then their own suffixes), which already gives every
    option's first token; the cache is then copied once per option and all
    options' remaining tokens run in one more pass.
    """
    import torch.nn.functional as F

    parts = decoder_and_head(model)
    decoder, head = parts
    device = model.device
    longest = max(len(o) for o in options)
    cache, mask, last, next_position = _prefill(parts, rows, longest, pad_id)
    first = F.log_softmax(head(last).float(), dim=-1)
    scores = first[:, [o[0] for o in options]]
    if longest == 1:
        return scores
    batch, count = len(rows), len(options)
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
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                     use_cache=True).last_hidden_state
    picked = targets >= 0
    logprobs, _ = token_logprobs(head, hidden[picked], targets[picked])
    rest = torch.zeros(batch * count, device=device).index_add_(0, torch.nonzero(picked)[:, 0], logprobs)
    return scores + rest.view(batch, count)
