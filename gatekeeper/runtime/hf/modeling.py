"""Small model-side helpers shared by the trainer and the runtime.

Scoring only needs the log-probabilities of a few answer tokens per sequence.
Running the decoder and projecting just those positions through the output
layer avoids materialising full-vocabulary logits for every position (49k
floats per token for SmolLM2), which dominates memory on long prompts.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub

import logging
import warnings

import torch
import torch.nn.functional as F

from gatekeeper._util.files import pickled_files
from gatekeeper._util.text import first_line, shorten
from gatekeeper.errors import MissingDependency, RuntimeLoadError

# Keep the console to gatekeeper's own progress: bitsandbytes reports an optional
# CPU kernel package it does without, and transformers a deprecation inside peft.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def decoder_and_head(causal_lm):
    """The transformer body and the output layer of a (possibly peft-wrapped) causal LM."""
    model = causal_lm.get_base_model() if hasattr(causal_lm, "get_base_model") else causal_lm
    return getattr(model, model.base_model_prefix), model.get_output_embeddings()


MIN_SHARED_PREFIX = 8  # shorter prefixes save too little to be worth a separate pass


def shared_prefix(input_ids, labels) -> int:
    """Leading positions identical in every row and before every row's first labelled token.

    Rows are right-padded, so position t is token t in every row. (The floor
    also keeps a one-token prefix away from bitsandbytes' 4-bit matrix-vector
    kernel, which has no backward.)
    """
    first_label = int((labels != -100).int().argmax(-1).min())
    same = (input_ids == input_ids[:1]).all(0)
    differs = torch.nonzero(~same)
    length = int(differs[0]) if len(differs) else input_ids.shape[1]
    # position first_label - 1 predicts the first answer token: it must run with its row
    shared = min(length, first_label - 1)
    return shared if shared >= MIN_SHARED_PREFIX and input_ids.shape[0] > 1 else 0


def target_logprobs(causal_lm, input_ids, attention_mask, labels, *, share_prefix: bool = True):
    """Log-probability of each labelled token (labels != -100) given everything before it.

    Returns (logprobs, is_argmax, owner_row), flat over the labelled positions
    of the whole batch, in order.
    """
    hidden, targets, rows, head = labelled_hidden(causal_lm, input_ids, attention_mask, labels, share_prefix=share_prefix)
    chosen, is_argmax = token_logprobs(head, hidden, targets)
    return chosen, is_argmax, rows


def next_token_logprobs(causal_lm, input_ids, attention_mask, labels, *, share_prefix: bool = True):
    """The whole next-token distribution (log, float32) before each labelled token: (positions, vocab),
    in the order ``target_logprobs`` uses. What distillation compares."""
    hidden, _, _, head = labelled_hidden(causal_lm, input_ids, attention_mask, labels, share_prefix=share_prefix)
    return F.log_softmax(head(hidden).float(), dim=-1)


def labelled_hidden(causal_lm, input_ids, attention_mask, labels, *, share_prefix: bool = True):
    """The decoder's last hidden state before each labelled token, with those tokens, the row each
    belongs to, and the output layer: (hidden (positions, d), targets, rows, head).

    Prompts rendered from one template share a long prefix (the chat template's
    system turn and the task instruction). With ``share_prefix`` it runs once,
    as a batch of one, and its keys and values serve every row; gradients
    still flow through it. That saves arithmetic, which pays where arithmetic
    is the bottleneck (a CPU); where kernel launches are (a GPU at these
    sizes), the second pass costs more than it saves.
    """
    from transformers import DynamicCache

    decoder, head = decoder_and_head(causal_lm)
    shared = shared_prefix(input_ids, labels) if share_prefix else 0
    if shared:
        cache = DynamicCache(config=decoder.config)
        prefix = input_ids[:1, :shared]
        decoder(input_ids=prefix, attention_mask=torch.ones_like(prefix), cache=cache, use_cache=True)
        cache.batch_repeat_interleave(input_ids.shape[0])
        positions = torch.arange(shared, input_ids.shape[1], device=input_ids.device)[None]
        hidden = decoder(
            input_ids=input_ids[:, shared:], attention_mask=attention_mask, position_ids=positions,
            cache=cache, use_cache=True,
        ).last_hidden_state
    else:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    # suffix position j is absolute position shared + j, and predicts token shared + j + 1
    targets = labels[:, shared + 1 :]
    picked = targets != -100
    rows = torch.nonzero(picked, as_tuple=True)
    return hidden[:, :-1][picked], targets[picked], rows[0], head


def token_logprobs(head, hidden, wanted):
    """Log-probability of token ``wanted[i]`` after hidden state ``hidden[i]``, in float32, and
    whether it is the most likely token: the output layer runs on these rows alone."""
    logits = head(hidden).float()
    chosen = F.log_softmax(logits, dim=-1).gather(-1, wanted.unsqueeze(-1)).squeeze(-1)
    return chosen, logits.argmax(-1) == wanted


def pick_device(requested: str = "auto") -> torch.device:
    """The device to run on; a name torch does not know, or one this machine lacks, is the user's mistake."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise RuntimeLoadError(f"device {shorten(requested)!r} is not a device torch knows (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RuntimeLoadError(f"device {requested!r}: this machine has no CUDA GPU (use cpu or auto)")
        if device.index is not None and device.index >= count:
            raise RuntimeLoadError(f"device {requested!r}: this machine has {count} CUDA GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeLoadError(f"device {requested!r}: MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise RuntimeLoadError(f"device {requested!r}: gatekeeper runs on cpu, cuda or mps")
    return device


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively here (faster than float32, not emulated).

    CUDA GPUs from Ampere on; CPUs with AVX512-BF16 or AMX, where oneDNN runs
    bf16 products at about twice float32's rate (on a 2-core AVX512-BF16
    machine, SmolLM2's prefill ran 2.5x faster, a full-weight training step
    3.5x, a LoRA step, where products weigh less, 1.5x).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # The chip's features, and the kernels ATen really dispatches to: ATEN_CPU_CAPABILITY=avx2
        # (with ONEDNN_MAX_CPU_ISA=AVX2) makes an AVX512-BF16 machine compute as an AVX2-only one does.
        if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
            return False
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's own CPU feature probes
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def resolve_dtype(requested: str, device: torch.device) -> str:
    """``auto`` is bfloat16 where it runs natively and float32 elsewhere; any other name stands."""
    if requested != "auto":
        return requested
    return "bfloat16" if has_fast_bf16(device) else "float32"


def compute_precision(dtype: str, device: torch.device):
    """Autocast to ``dtype`` for the products, or nothing for float32: master weights stay as they are."""
    import contextlib

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


MODELS_LOADED = 0
"""Weights loaded by this process so far: how a test proves bad input was refused before any model loaded."""


def load_base_model(path, *, dtype: str = "float32", quantization: str = "none", device: str = "auto"):
    """The base as a causal LM: full precision, or frozen in 4-bit NF4 with double quantisation.

    bitsandbytes runs NF4 on the CPU as well as on CUDA, so QLoRA needs no GPU.
    """
    import importlib.util

    from transformers import AutoModelForCausalLM

    global MODELS_LOADED
    MODELS_LOADED += 1
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
        raise RuntimeLoadError(f"base {path} would not load: {first_line(exc)}") from None
    return model if quantization == "nf4" else model.to(target)


def keep_4bit_layers_differentiable(model) -> int:
    """Stop bitsandbytes repacking 4-bit weights for inference while the model trains.

    On CPUs with AVX512-BF16, a ``Linear4bit`` in eval mode repacks its weight
    into a layout served by a kernel that has no backward. Validation runs in
    eval mode, so from then on gradients would silently stop flowing through
    the frozen layers. Returns how many layers were kept trainable.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_adapter(model, adapter_dir: Path):
    """Wrap a base with a peft adapter from safetensors, refusing pickled weights."""
    from peft import PeftModel

    pickled = pickled_files(adapter_dir)
    if pickled:
        raise RuntimeLoadError(f"adapter {adapter_dir} holds pickled weights ({', '.join(pickled)}); only safetensors are loaded")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise RuntimeLoadError(f"adapter {adapter_dir} has no adapter_model.safetensors")
    try:
        # the adapter's weights in the serving dtype, as a bf16 server holds them (peft would upcast them to float32)
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=False, autocast_adapter_dtype=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise RuntimeLoadError(f"adapter {adapter_dir} does not fit base: {first_line(exc)}") from None
