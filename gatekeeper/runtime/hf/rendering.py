"""Messages to tokens, exactly as training encodes them, and a peft adapter put on a loaded base.

Shared by the runtime, the merged side, timing and the trainer, so a prompt is
rendered one way everywhere.
"""

from __future__ import annotations

from pathlib import Path

from gatekeeper._util.files import pickled_files
from gatekeeper._util.text import first_line
from gatekeeper.bundle.manifest import Messages
from gatekeeper.errors import RuntimeLoadError


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def render(tokenizer, messages: Messages) -> str:
    return tokenizer.apply_chat_template(
        [{"role": role, "content": content} for role, content in messages],
        tokenize=False,
        add_generation_prompt=True,
    )


def encode_example(tokenizer, messages: Messages, answer: str) -> tuple[list[int], list[int]]:
    """Prompt and answer ids exactly as training sees them.

    The answer ends with the end-of-turn token so the model learns to stop.
    """
    prompt_ids = tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return prompt_ids, answer_ids


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
