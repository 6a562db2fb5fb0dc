"""Train a short candidate on a GPU for the gate-run and release-gate figures.

    python bench/gpu_candidate.py BASE_DIR WORKDIR [--steps 10] [--device cuda]

The demo's task and data on ``BASE_DIR`` (on a GPU machine, the embedded
model's architecture with random weights: ``bench/random_base.py``), served on
CUDA in float32 with every prompt of a side in one batch, gated by
merge_equivalence and latency_memory. Prints the bundle's path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    import yaml
    from trainer import bench_recipe

    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.training.loop import train
    from gatekeeper.training.versions import write_candidate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    path = bench_recipe(SimpleNamespace(method="lora", steps=args.steps, device=args.device, base=str(args.base.resolve()),
                                        batch=None, gradient_checkpointing=False), args.workdir)
    recipe = yaml.safe_load(path.read_text())
    recipe["name"] = "gpu-candidate"
    recipe["serving"].update(dtype="float32", batch_size=256)
    # Light enough to finish inside the script's time limit: on an H100 these per-prompt
    # paths run about 15 ms a token (kernel launches), and the default 32 prompts did not.
    recipe["gates"] = [{"name": "merge_equivalence", "params": {"max_prompts": 8}},
                       {"name": "latency_memory", "params": {"prompts": 2, "repeats": 3, "warmup": 1}}]
    path.write_text(yaml.safe_dump(recipe))
    recipe, root = load_recipe(path)
    print(write_candidate(train(recipe, root), recipe, root))


if __name__ == "__main__":
    main()
