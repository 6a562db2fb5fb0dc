"""Greedy picks from a float32 output layer: a bfloat16 screen, then float32 logits for the few tokens left.

At the embedded model's size the output layer (49k tokens x 576) is a fifth of
a decoding step's arithmetic, and a greedy pick reads only the best tokens of
each row. ``ScreenedHead`` runs the layer in bfloat16 (twice float32's rate
where it is native), bounds how far each bfloat16 logit can be from the real
one, keeps every token whose bound reaches within ``margin`` of the row's
best, and computes those tokens' logits in float32. Every token it drops is
provably more than ``margin`` below the row's best, so the pick, and whether
the best two are within ``margin`` (a near-tie the decoder settles alone),
are those of the float32 logits up to float32 rounding.

The bound, for a row ``x`` and a token row ``w`` of the layer, each split
into its bfloat16 rounding and a remainder (``x = xb + xr``, ``w = wb + wr``):

    x.w = xb.wb + xb.wr + xr.w
    |xb.wr| <= |xb| max|wr|,   |xr.w| <= |xr| max|w|        (Cauchy-Schwarz)

A CPU's bfloat16 product (oneDNN) computes ``xb.wb`` with exact products
and float32 sums (at most ``2 n 2^-24 |xb| max|wb|`` off for ``n`` inputs)
and rounds it to bfloat16 (at most ``2^-8`` of its size; ``2^-7`` is used).
The remainders' norms are measured, not assumed: on the embedded model
``max|wr|`` is a third of the worst case. CPUs only: cuBLAS may sum bfloat16
products in bfloat16 (``allow_bf16_reduced_precision_reduction``), which the
bound does not cover.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatekeeper.runtime.hf.modeling import has_fast_bf16

_OUTPUT_ROUNDING = 2.0**-7  # twice bfloat16's unit roundoff
_SUM_ROUNDING = 2 * 2.0**-24  # per summed input, twice float32's unit roundoff


def plain_pick(head, hidden: torch.Tensor, margin: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each row's greedy token from the full logits, and (with a margin) whether its best two are within it.

    ``hidden`` is the last position of each row only: a 2-D product (with
    ``logits_to_keep`` a bfloat16 CPU matmul broadcasts the 576 x 49k layer to every row first).
    """
    logits = head(hidden)
    if margin is None:
        return logits.argmax(-1), None
    best = logits.topk(2, dim=-1)
    return best.indices[:, 0], (best.values[:, 0] - best.values[:, 1]) < margin


class ScreenedHead:
    """A float32 output layer's greedy pick through a bfloat16 screen (see the module's docstring)."""

    def __init__(self, head: torch.nn.Linear):
        self.weight = head.weight.detach()
        self.screen = self.weight.to(torch.bfloat16)
        self.largest_row = float(self.weight.norm(dim=1).max())
        self.largest_remainder = float((self.weight - self.screen.float()).norm(dim=1).max())

    @staticmethod
    def suits(head) -> bool:
        """A plain float32 ``nn.Linear`` without bias, on a CPU where bfloat16 products are native."""
        device = head.weight.device
        return (type(head) is torch.nn.Linear and head.bias is None and head.weight.dtype == torch.float32
                and device.type == "cpu" and has_fast_bf16(device))

    def error_bound(self, rows: torch.Tensor, rows_bf16: torch.Tensor, screened: torch.Tensor) -> torch.Tensor:
        """Per row, the most any screened logit can differ from the real one."""
        near = rows_bf16.float()
        near_norm, rest_norm = near.norm(dim=-1), (rows - near).norm(dim=-1)
        sums = _SUM_ROUNDING * rows.shape[-1] * near_norm * self.largest_row * (1 + 2.0**-7)
        rounding = _OUTPUT_ROUNDING * screened.abs().amax(-1).float()
        return near_norm * self.largest_remainder + rest_norm * self.largest_row + sums + rounding

    def candidates(self, hidden: torch.Tensor, margin: float) -> torch.Tensor:
        """The tokens some row may pick or find within ``margin`` of its pick: every other is provably out."""
        rows_bf16 = hidden.to(torch.bfloat16)
        screened = F.linear(rows_bf16, self.screen)
        bound = self.error_bound(hidden, rows_bf16, screened)
        floor = screened.amax(-1).float() - 2 * bound - margin
        if not torch.isfinite(floor).all():
            return torch.arange(self.weight.shape[0], device=hidden.device)  # a NaN row: every token, as the plain path
        floor = (floor - floor.abs() * 2.0**-8).to(torch.bfloat16)  # rounded down, never up, into bfloat16
        return torch.nonzero((screened >= floor[:, None]).any(0))[:, 0]

    def pick(self, hidden: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``plain_pick`` with a margin, from float32 logits of the candidates alone."""
        kept = self.candidates(hidden, margin)
        if len(kept) == 1:  # alone within reach of every row: every other token is over the margin below
            return kept.expand(len(hidden)), torch.zeros(len(hidden), dtype=torch.bool, device=hidden.device)
        best = F.linear(hidden, self.weight[kept]).topk(2, dim=-1)
        return kept[best.indices[:, 0]], (best.values[:, 0] - best.values[:, 1]) < margin


def head_picker(head, margin: float | None):
    """``hidden -> (tokens, tied)`` for one decoding run: screened where that is exact and faster."""
    if margin is not None and ScreenedHead.suits(head):
        screened = ScreenedHead(head)
        return lambda hidden: screened.pick(hidden, margin)
    return lambda hidden: plain_pick(head, hidden, margin)
