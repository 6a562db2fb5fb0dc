"""The bfloat16-screened greedy pick gives the float32 logits' pick and near-ties."""

import pytest
import torch

from gatekeeper.runtime.hf.head import ScreenedHead, head_picker, plain_pick

MARGIN = 1e-3


def _head(weight: torch.Tensor) -> torch.nn.Linear:
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    head.weight.data = weight
    return head.requires_grad_(False)


def test_screened_pick_and_near_ties_equal_the_float32_logits():
    torch.manual_seed(0)
    weight = torch.randn(4096, 64) * 0.1
    hidden = torch.randn(48, 64) * 30  # logits of tens, as a decoder's last norm gives
    # plant a runner-up within the margin for a third of the rows: a copy of the row's best token, nudged
    logits = hidden @ weight.t()
    for i in range(0, 48, 3):
        best = int(logits[i].argmax())
        twin = int(logits[i].argmin())
        weight[twin] = weight[best] - hidden[i] * (MARGIN / 4) / hidden[i].square().sum()
    head = _head(weight)
    want_tokens, want_tied = plain_pick(head, hidden, MARGIN)
    tokens, tied = ScreenedHead(head).pick(hidden, MARGIN)
    assert want_tied.sum() >= 16  # the planted twins are near-ties (others may be too)
    assert torch.equal(tokens, want_tokens)
    assert torch.equal(tied, want_tied)


def test_the_screen_keeps_a_token_its_bfloat16_logit_ranks_below_the_best():
    """Rounding to bfloat16 puts token 0 well ahead of token 1, whose real logit is higher: token 1 must win."""
    weight = torch.zeros(256, 576)
    weight[2:] = torch.randn(254, 576) * 0.01
    weight[0, :64] = 1.0040  # rounds up to 1.0078 in bfloat16
    weight[1, :64] = 1.0038  # rounds down to 1.0
    weight[1, 64] = 0.02
    hidden = torch.zeros(1, 576)
    hidden[0, :65] = 100.0
    logits = hidden @ weight.t()
    screened = torch.nn.functional.linear(hidden.bfloat16(), weight.bfloat16())
    # the premise: token 1 is 0.7 ahead in float32, over a bfloat16 step (32 here) behind in bfloat16
    assert logits[0, 1] - logits[0, 0] > 0.5 and screened[0, 0] - screened[0, 1] >= 32
    tokens, tied = ScreenedHead(_head(weight)).pick(hidden, MARGIN)
    assert tokens.tolist() == [1] and tied.tolist() == [False]


def test_a_row_with_nan_keeps_every_token_as_the_plain_path_does():
    torch.manual_seed(1)
    head = _head(torch.randn(512, 32))
    hidden = torch.randn(3, 32)
    hidden[1, 4] = float("nan")
    assert len(ScreenedHead(head).candidates(hidden, MARGIN)) == 512
    tokens, _ = ScreenedHead(head).pick(hidden, MARGIN)
    want, _ = plain_pick(head, hidden, MARGIN)
    assert tokens[[0, 2]].tolist() == want[[0, 2]].tolist()


@pytest.mark.parametrize("native_bf16", [True, False])
def test_the_screen_is_used_for_a_float32_head_with_a_margin_where_bfloat16_is_native(monkeypatch, native_bf16):
    import gatekeeper.runtime.hf.head as head_module

    monkeypatch.setattr(head_module, "has_fast_bf16", lambda device: native_bf16)
    used = []
    monkeypatch.setattr(ScreenedHead, "pick", lambda self, hidden, margin: used.append(margin))
    head = _head(torch.randn(64, 16))
    head_picker(head, MARGIN)(torch.randn(2, 16))
    head_picker(head, None)(torch.randn(2, 16))  # no margin: no near-ties to report, the plain path
    head_picker(_head(torch.randn(64, 16).bfloat16()), MARGIN)(torch.randn(2, 16).bfloat16())
    assert used == ([MARGIN] if native_bf16 else [])
