"""Small model-side helpers shared by the trainer and the runtime.

Scoring only needs the log-probabilities of a few answer tokens per sequence.
Running the decoder and projecting just those positions through the output
layer avoids materialising full-vocabulary logits for every position (49k
floats per token for SmolLM2), which dominates memory on long prompts.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub

import torch
import torch.nn.functional as F


def decoder_and_head(causal_lm):
    """The transformer body and the output layer of a (possibly peft-wrapped) causal LM."""
    model = causal_lm.get_base_model() if hasattr(causal_lm, "get_base_model") else causal_lm
    return getattr(model, model.base_model_prefix), model.get_output_embeddings()


def target_logprobs(causal_lm, input_ids, attention_mask, labels):
    """Log-probability of each labelled token (labels != -100) given everything before it.

    Returns (logprobs, is_argmax, owner_row), flat over the labelled positions
    of the whole batch, in order.
    """
    decoder, head = decoder_and_head(causal_lm)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    # position t predicts token t+1
    targets = labels[:, 1:]
    picked = targets != -100
    rows = torch.nonzero(picked, as_tuple=True)
    logits = head(hidden[:, :-1][picked]).float()
    logprobs = F.log_softmax(logits, dim=-1)
    wanted = targets[picked]
    chosen = logprobs.gather(-1, wanted.unsqueeze(-1)).squeeze(-1)
    return chosen, logits.argmax(-1) == wanted, rows[0]


def answer_loss(causal_lm, input_ids, attention_mask, labels):
    """Mean cross-entropy over answer tokens only."""
    chosen, _, _ = target_logprobs(causal_lm, input_ids, attention_mask, labels)
    return -chosen.mean()


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
