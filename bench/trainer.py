"""gatekeeper's trainer against Hugging Face Trainer + peft: same model, data, batch and steps.

Both train the same LoRA (the recipe's rank, alpha and target modules) on the
same support-ticket examples, rendered by the same chat template, with the loss
on answer tokens only, and report tokens per second (real tokens, padding not
counted) and peak memory (process RSS on the CPU; on CUDA the allocator's peak
from the end of the first step on, so the loader's transient peak is left out).

    python bench/trainer.py [--steps 10] [--method lora|qlora|dora] [--device cpu|cuda] [--base DIR] [--batch N]
                            [--gradient-checkpointing]

By default it trains the embedded SmolLM2-135M-Instruct; ``--base`` takes any
local model directory (on a GPU machine without the packaged GGUF, the same
architecture built from its config: throughput does not depend on the weights'
values). Both trainers compute in the same precision: bfloat16 where the device
runs it natively (the stock one through ``TrainingArguments(bf16=True)``),
float32 elsewhere. Each runs in its own process, so one's peak memory cannot
hide the other's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RECIPE = REPO / "adapters" / "support-ticket-json" / "recipe.yaml"


def start_peak_window(device: str) -> None:
    """On CUDA, peak memory counts from the end of the first step: the training peak, not the loader's."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib(device: str) -> float:
    import resource

    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_recipe(args, workdir: Path) -> Path:
    """The demo recipe, cut to the benchmark's steps, without validation in between or rehearsal."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    for key in ("train", "validation", "eval", "contract"):
        recipe["data"][key] = str((RECIPE.parent / recipe["data"][key]).resolve())
    recipe["data"].pop("extra", None)
    recipe["data"].pop("rehearsal", None)
    recipe["method"] = args.method
    recipe["training"].update(max_steps=args.steps, eval_every=10**6, warmup_steps=1)
    if args.batch:
        recipe["training"]["batch_size"] = args.batch
    if args.gradient_checkpointing:
        recipe["training"]["gradient_checkpointing"] = True
    recipe["serving"] = {"device": args.device}
    if args.base:
        recipe["base"] = args.base
    path = workdir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def precision(device: str) -> str:
    import torch

    from gatekeeper.runtime.hf.modeling import resolve_dtype

    return resolve_dtype("auto", torch.device(device))


def run_gatekeeper(args) -> dict:
    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        recipe, root = load_recipe(bench_recipe(args, Path(tmp)))
        timings = []

        def on_step(info):
            if not timings:
                start_peak_window(args.device)
            timings.append((time.perf_counter(), info))

        result = train(recipe, root, on_step=on_step)
    # from the end of the first step to the end of the last: warm-up and validation excluded
    t0, t1 = timings[0][0], timings[-1][0]
    tokens = result.record["tokens_per_second"] * result.record["wall_seconds"]  # all real tokens seen
    per_step = tokens / len(timings)
    return {"trainer": "gatekeeper", "tokens_per_second": per_step * (len(timings) - 1) / (t1 - t0),
            "peak_mib": peak_memory_mib(args.device)}


def run_stock(args) -> dict:
    """Hugging Face Trainer + peft, as the peft documentation sets it up."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from gatekeeper.bundle.base import resolve_base
    from gatekeeper.bundle.goldens import Contract
    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.runtime.hf.modeling import load_base_model
    from gatekeeper.runtime.prompts import load_tokenizer
    from gatekeeper.training.data import encode, load_training_split

    with tempfile.TemporaryDirectory() as tmp:
        recipe, root = load_recipe(bench_recipe(args, Path(tmp)))
        base = resolve_base(recipe.base, relative_to=root)
        tokenizer = load_tokenizer(base.path)
        contract = Contract.load(root / recipe.data.contract)
        examples = encode(load_training_split(root / recipe.data.train, contract), tokenizer, recipe.data.prompt)
        rows = [{"input_ids": e.prompt_ids + e.answer_ids, "labels": [-100] * len(e.prompt_ids) + e.answer_ids}
                for e in examples]
        quantization = "nf4" if args.method == "qlora" else "none"
        # the base in the precision that computes, as a user training in bf16 loads it
        model = load_base_model(base.path, dtype=precision(args.device), quantization=quantization, device=args.device)
        if quantization == "nf4":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        lora = recipe.adapter
        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules, use_dora=args.method == "dora",
                                                 task_type="CAUSAL_LM"))
        marks = []

        class Clock(TrainerCallback):
            def on_step_end(self, *_, **__):
                if not marks:
                    start_peak_window(args.device)
                marks.append(time.perf_counter())

        training = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=recipe.training.batch_size, max_steps=args.steps,
            learning_rate=recipe.training.learning_rate, lr_scheduler_type="cosine", warmup_steps=1,
            logging_steps=10**6, save_strategy="no", report_to=[], seed=recipe.training.seed,
            use_cpu=args.device == "cpu", bf16=precision(args.device) == "bfloat16",
            dataloader_num_workers=0, gradient_checkpointing=args.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        trainer = Trainer(model=model, args=training, train_dataset=rows, callbacks=[Clock()],
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
        trainer.train()
    # Trainer shuffles with its own sampler: count the real tokens of the rows of one epoch, per row
    per_row = sum(len(r["input_ids"]) for r in rows) / len(rows)
    tokens_per_step = per_row * recipe.training.batch_size
    return {"trainer": "hf-trainer+peft", "tokens_per_second": tokens_per_step * (len(marks) - 1) / (marks[-1] - marks[0]),
            "peak_mib": peak_memory_mib(args.device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--method", choices=["lora", "qlora", "dora"], default="lora")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--base", help="a local model directory instead of the recipe's base")
    parser.add_argument("--batch", type=int, help="batch size instead of the recipe's")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="both trainers recompute activations")
    parser.add_argument("--only", choices=["gatekeeper", "stock"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.only:  # one trainer, in a process of its own
        print(json.dumps((run_gatekeeper if args.only == "gatekeeper" else run_stock)(args)))
        return
    results = {}
    for which in ("stock", "gatekeeper"):
        command = [sys.executable, __file__, "--only", which, "--steps", str(args.steps), "--method", args.method,
                   "--device", args.device] + (["--base", args.base] if args.base else []) \
            + (["--batch", str(args.batch)] if args.batch else []) \
            + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[which] = json.loads(done.stdout.strip().splitlines()[-1])
    stock, ours = results["stock"], results["gatekeeper"]
    print(f"{args.method} on {args.device}, {args.steps} steps, {precision(args.device)}"
          + (", gradient checkpointing" if args.gradient_checkpointing else ""))
    print(f"{'trainer':<20}{'tokens/s':>12}{'peak MiB':>12}")
    for row in (stock, ours):
        print(f"{row['trainer']:<20}{row['tokens_per_second']:>12.1f}{row['peak_mib']:>12.0f}")
    print(f"speed: {ours['tokens_per_second'] / stock['tokens_per_second']:.2f}x; "
          f"memory: {ours['peak_mib'] / stock['peak_mib']:.2f}x of the stock trainer's")


if __name__ == "__main__":
    main()
