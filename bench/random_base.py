"""A base-model directory with the embedded model's tokenizer and random weights of a named shape.

On a GPU machine the embedded GGUF is not available, but throughput and memory
do not depend on the weights' values: the same architecture built from its
config measures the same. The tokenizer (and its chat template) is the
embedded model's, so prompts render and tokenize exactly as on the real base.

    python bench/random_base.py OUT [--shape smollm2-135m|qwen2.5-1.5b] [--like DIR]
    python bench/random_base.py OUT --tokenizer-only      # config + tokenizer, no weights

``--like`` takes a directory holding the tokenizer files (for example one
written by ``--tokenizer-only`` on a machine that has the embedded model);
without it, the embedded model is converted and used. The Qwen2.5-1.5B shape
keeps its own 151,936-row vocabulary; the SmolLM2 tokenizer only uses the
first 49,152 ids, which changes neither the parameter count nor the memory.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def shape_config(shape: str, like: Path):
    from transformers import AutoConfig, Qwen2Config

    if shape == "smollm2-135m":
        config = AutoConfig.from_pretrained(like)  # the embedded model's own config
    else:  # qwen2.5-1.5b
        base = AutoConfig.from_pretrained(like)
        config = Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                             num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                             max_position_embeddings=32768, bos_token_id=base.bos_token_id,
                             eos_token_id=base.eos_token_id, pad_token_id=getattr(base, "pad_token_id", None))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=["smollm2-135m", "qwen2.5-1.5b"], default="smollm2-135m")
    parser.add_argument("--like", type=Path, help="directory with config.json and the tokenizer files")
    parser.add_argument("--tokenizer-only", action="store_true", help="write config and tokenizer, no weights")
    args = parser.parse_args()

    like = args.like
    if like is None:
        from gatekeeper.bundle.base import resolve_base

        like = resolve_base("smollm2-135m-instruct").path
    args.out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (like / name).is_file():
            shutil.copyfile(like / name, args.out / name)
    if args.tokenizer_only:
        shutil.copyfile(like / "config.json", args.out / "config.json")
        print(args.out)
        return

    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # initialising 1.5B weights on a CPU takes a minute
        model = AutoModelForCausalLM.from_config(shape_config(args.shape, like), dtype=torch.bfloat16)
    model.save_pretrained(args.out, safe_serialization=True)
    print(f"{args.out}: {args.shape}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, random")


if __name__ == "__main__":
    main()
