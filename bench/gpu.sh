#!/usr/bin/env bash
# The GPU part of the benchmarks, on a CUDA machine with gatekeeper installed:
#
#   bash bench/gpu.sh [TOKENIZER_DIR]
#
# Models are the embedded model's architecture and Qwen2.5-1.5B's, built from
# their configs with random weights (bench/random_base.py): throughput and
# memory do not depend on the weights' values. TOKENIZER_DIR holds the
# embedded model's config and tokenizer, written on a machine that has it by
# `python bench/random_base.py DIR --tokenizer-only`; without it the embedded
# model is converted here. The check's verdict goes to $OUT (default
# /tmp/gatekeeper-gpu). A failing step is reported and the rest run.
set -u
out=${OUT:-/tmp/gatekeeper-gpu}
work=$(mktemp -d)
mkdir -p "$out"
like=()
[ $# -ge 1 ] && like=(--like "$1")
step() {
  local started=$SECONDS
  echo "== $*"
  "$@" || echo "!! failed ($?): $*"
  echo "   ($((SECONDS - started)) s)"
}

python bench/random_base.py "$work/smol" "${like[@]}" || exit 1
python bench/random_base.py "$work/qwen" --shape qwen2.5-1.5b "${like[@]}" || exit 1
step python -m pytest -q --tb=short -p no:cacheprovider tests/test_gpu.py
# LoRA on the embedded model's shape, at the reference's batch of 16
step python bench/trainer.py --device cuda --base "$work/smol" --batch 16 --steps 20
# QLoRA against LoRA at 1.5B parameters, batch 8
step python bench/trainer.py --device cuda --base "$work/qwen" --batch 8 --steps 10 --method qlora
step python bench/trainer.py --device cuda --base "$work/qwen" --batch 8 --steps 10 --method lora
bundle=$(python bench/gpu_candidate.py "$work/smol" "$work/candidate" | tail -1)
step timeout 240 python bench/gate_run.py "$bundle" --limit 200 --no-tutorial --stock-batch 64 --no-recheck
step timeout 300 gatekeeper check "$bundle" --out "$out/check" -q
cp "$out/check/verdict.json" "$out/gpu_verdict.json" 2>/dev/null
