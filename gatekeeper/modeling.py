"""Small model-side helpers shared by the trainer and the runtime.

Scoring only needs the log-probabilities of a few answer tokens per sequence.
Running the decoder and projecting just those positions through the output
layer avoids materialising full-vocabulary logits for every position (49k
floats per token for SmolLM2), which dominates memory on long prompts.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub

import logging
import warnings

import torch
import torch.nn.functional as F

# Keep the console to gatekeeper's own progress: bitsandbytes reports an optional
# CPU kernel package it does without, and transformers a deprecation inside peft.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


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


def load_base_model(path, *, dtype: str = "float32", quantization: str = "none", device: str = "auto"):
    """The base as a causal LM: full precision, or frozen in 4-bit NF4 with double quantisation.

    bitsandbytes runs NF4 on the CPU as well as on CUDA, so QLoRA needs no GPU.
    """
    import importlib.util

    from transformers import AutoModelForCausalLM

    from gatekeeper.errors import MissingDependency, RuntimeLoadError

    target = pick_device(device)
    kwargs = {"dtype": getattr(torch, dtype), "use_safetensors": True}
    if quantization == "nf4":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise MissingDependency("bitsandbytes", "4-bit (QLoRA) loading")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, dtype),
        )
        kwargs["device_map"] = {"": target.index if target.type == "cuda" and target.index is not None else target.type}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeLoadError(f"base {path} would not load: {first}") from None
    return model if quantization == "nf4" else model.to(target)
