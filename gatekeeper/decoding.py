"""Greedy decoding for many prompts at once, without the work ``generate`` repeats.

Three savings, none of which changes what greedy decoding picks:

- **Shared prefix.** Prompts built from one template start with the same
  tokens (the chat template's system turn, the task instruction: 79 of the 117
  tokens of a support-ticket prompt). That prefix runs through the model once
  per batch and its keys and values are copied to every row.
- **Finished rows leave.** ``generate`` keeps computing a row after its
  end-of-turn token until the whole batch is done; here a finished row is
  dropped from the batch and its cache.
- **No full-vocabulary logits for the prompt.** Only the last position of the
  prompt is projected through the output layer.
- **No copying the cache.** transformers' dynamic cache concatenates each
  step's keys and values onto the whole cache, which copies it every step
  (more than half of a decoding step on a CPU at batch 64). Here each layer
  writes into room reserved for the prompt and every new token.

Rows are laid out ``[shared prefix][padding][own suffix]``: the padding is
masked out and position ids count only real tokens, so every row sees exactly
the positions and context it would see alone.
"""

from __future__ import annotations

import contextlib
import gc

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


class _ReservedLayer(DynamicLayer):
    """A dynamic cache layer that writes into reserved room instead of concatenating.

    ``keys`` and ``values`` stay views of the filled part, so everything that
    reads a ``DynamicLayer`` (lengths, masks) works unchanged.
    """

    def __init__(self, room: int):
        super().__init__()
        self.room, self.filled = room, 0

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


def _forward(parts, ids, mask, positions, cache):
    # The body, then the output layer on each row's last position as a 2-D product: with
    # ``logits_to_keep`` a bfloat16 CPU matmul broadcasts the (576 x 49k) head to every row first.
    decoder, head = parts
    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    return head(hidden.last_hidden_state[:, -1]).argmax(-1), cache


def _prefill(parts, rows: list[list[int]], extra: int, pad_id: int):
    """Run every prompt once: the shared prefix as a batch of one, then each row's own suffix.

    Returns the cache (room for ``extra`` more positions), the attention mask
    so far, each row's last hidden state and the position its next token takes.
    """
    decoder, _ = parts
    device = decoder.device
    batch = len(rows)
    shared = common_prefix_length(rows)
    width = max(len(r) - shared for r in rows)
    cache = reserved_cache(decoder.config, shared + width + extra)
    if shared:
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
def greedy_batch(model, rows: list[list[int]], max_new_tokens: int, stop_ids: set[int], pad_id: int) -> list[list[int]]:
    """Greedy continuations of ``rows`` (token ids), each ending before its first stop token."""
    device = model.device
    parts = decoder_and_head(model)
    cache, mask, last, next_position = _prefill(parts, rows, max_new_tokens, pad_id)
    token = parts[1](last).argmax(-1)  # the output layer on the last positions alone (see _forward)

    outputs: list[list[int]] = [[] for _ in rows]
    alive = torch.arange(len(rows), device=device)  # original row index of each batch row
    with _collector_paused():
        _decode(parts, cache, mask, token, next_position, alive, outputs, max_new_tokens, stop_ids)
    return outputs


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


def _decode(parts, cache, mask, token, next_position, alive, outputs, max_new_tokens, stop_ids):
    """The greedy loop: append each live row's token, drop finished rows, run one more position."""
    device = token.device
    for step in range(max_new_tokens):
        done = torch.tensor([int(t) in stop_ids for t in token.tolist()], device=device)
        for row, t, stop in zip(alive.tolist(), token.tolist(), done.tolist()):
            if not stop:
                outputs[row].append(t)
        if step + 1 == max_new_tokens:
            break
        if done.any():
            keep = torch.nonzero(~done).squeeze(-1)
            if keep.numel() == 0:
                break
            cache.batch_select_indices(keep)
            alive, token, mask, next_position = alive[keep], token[keep], mask[keep], next_position[keep]
        mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long, device=device)], dim=1)
        token, cache = _forward(parts, token[:, None], mask, next_position[:, None], cache)
        next_position = next_position + 1


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
