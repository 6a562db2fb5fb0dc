"""The DPO loss (Rafailov et al., 2023), written out, on one loaded model.

For a prompt x with a chosen answer c and a rejected answer r:

    loss = -log sigmoid(beta * ((log p(c|x) - log ref(c|x)) - (log p(r|x) - log ref(r|x))))

where log p(y|x) is the sum of the answer's token log-probabilities under the model
being trained, and ``ref`` is the reference policy: here the parent adapter, as
loaded. Its log-probabilities are computed once, before the first step, on the
very model that then trains (no gradients, dropout off) and kept: no second copy
of the weights. At step 0 the model *is* the reference, so every margin is 0 and
every pair's loss is log 2. ``sft_weight`` adds the chosen answers' per-token
negative log-likelihood (RPO; TRL's ``rpo_alpha``), which plain DPO lacks: its
margin can widen by making the rejected answer unlikely alone.

TRL's DPOTrainer is not used: it brings its own training loop, data collators
and model wrappers, where this trainer has one loop, one encoding of prompts and
one way of loading an adapter; the loss itself is five lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatekeeper.bundle.goldens import GoldenItem
from gatekeeper.bundle.manifest import messages_for
from gatekeeper.training.data import Encoded, collate


@dataclass(frozen=True)
class EncodedPair:
    id: str
    chosen: Encoded
    rejected: Encoded


def encode_pairs(items: list[GoldenItem], tokenizer) -> list[EncodedPair]:
    """Each pair's prompt as a plain chat turn (no task template: it is how the safety gate asks),
    with either answer, ids exactly as training and scoring see them."""
    from gatekeeper.runtime.prompts import encode_example

    pairs = []
    for item in items:
        messages = messages_for(item.input)
        sides = [Encoded(f"{item.id}/{side}", *encode_example(tokenizer, messages, item.expected[side]))
                 for side in ("chosen", "rejected")]
        pairs.append(EncodedPair(item.id, *sides))
    return pairs


def sequence_logprobs(model, rows: list[Encoded], pad_id: int, device, *, share_prefix: bool = True):
    """log p(answer | prompt) of each row: its answer tokens' log-probabilities summed, float32, shape (rows,)."""
    import torch

    from gatekeeper.runtime.hf.modeling import target_logprobs

    ids, mask, labels = (t.to(device) for t in collate(rows, pad_id))
    tokens, _, owner = target_logprobs(model, ids, mask, labels, share_prefix=share_prefix)
    return torch.zeros(len(rows), dtype=tokens.dtype, device=tokens.device).index_add(0, owner, tokens)


def pair_logprobs(model, pairs: list[EncodedPair], pad_id: int, device, *, share_prefix: bool = True):
    """(chosen, rejected) sequence log-probabilities of a batch of pairs, in one forward pass."""
    both = sequence_logprobs(model, [p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, device,
                             share_prefix=share_prefix)
    return both[: len(pairs)], both[len(pairs):]


def reference_logprobs(model, pairs: list[EncodedPair], pad_id: int, device, *, batch: int = 16,
                       share_prefix: bool = True):
    """The reference's (chosen, rejected) log-probabilities of every pair, on CPU: computed once,
    with the model as it is now (the caller sets eval mode), without gradients."""
    import torch

    chosen, rejected = [], []
    with torch.no_grad():
        for start in range(0, len(pairs), batch):
            c, r = pair_logprobs(model, pairs[start : start + batch], pad_id, device, share_prefix=share_prefix)
            chosen.append(c.cpu())
            rejected.append(r.cpu())
    return torch.cat(chosen), torch.cat(rejected)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """Per pair: (loss, margin), the margin being beta times how much more the model prefers the chosen
    answer than the reference did; positive once the model has moved the right way."""
    import torch.nn.functional as F

    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin), margin.detach()


def dpo_batch_loss(model, pairs: list[EncodedPair], ref_chosen, ref_rejected, beta: float, pad_id: int, device,
                   *, sft_weight: float = 0.0, share_prefix: bool = True):
    """The mean DPO loss of a batch of pairs (to call ``backward`` on) and each pair's margin.
    ``ref_chosen`` and ``ref_rejected`` are the reference's values for exactly these pairs. With
    ``sft_weight`` the chosen answers' mean per-token negative log-likelihood is added, times it
    (``DpoSettings.sft_weight``)."""
    chosen, rejected = pair_logprobs(model, pairs, pad_id, device, share_prefix=share_prefix)
    losses, margins = dpo_loss(chosen, rejected, ref_chosen.to(chosen), ref_rejected.to(chosen), beta)
    loss = losses.mean()
    if sft_weight:
        lengths = chosen.new_tensor([len(p.chosen.answer_ids) for p in pairs])
        loss = loss + sft_weight * (-chosen / lengths).mean()
    return loss, margins
