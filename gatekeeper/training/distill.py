"""Rehearsal by distillation: on ordinary requests, stay close to the base's whole distribution.

Training on the base's greedy answers (rehearsal mode ``answers``) keeps only the
top token of each position; the rest of what the base would have said, and how
sure it was, is lost. Here the loss on a rehearsal row is KL(base || adapter) at
every answer position, over the full vocabulary. The base is the model being
trained with its adapter switched off (``TrainingMethod.base_side``): no second
copy of the weights, and a forward pass without gradients per rehearsal group.
"""

from __future__ import annotations


def distillation_loss(model, base_side, input_ids, attention_mask, labels, *, share_prefix: bool = True):
    """Mean over the labelled positions of KL(base || model): zero exactly where the two agree."""
    import torch
    import torch.nn.functional as F

    from gatekeeper.runtime.hf.modeling import next_token_logprobs

    with torch.no_grad(), base_side(model):
        teacher = next_token_logprobs(model, input_ids, attention_mask, labels, share_prefix=share_prefix)
    student = next_token_logprobs(model, input_ids, attention_mask, labels, share_prefix=share_prefix)
    per_position = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)
    return per_position.mean()
