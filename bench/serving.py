"""The openai runtime against a real vLLM server beside the hf runtime, on the same prompts, in one run.

Starts vLLM's CPU build (``make vllm-env``) on 127.0.0.1 with the bundle's base
and adapter, asks both sides' greedy answers to the first N evaluation prompts
through the ``openai`` runtime, then the same through the ``hf`` runtime in this
process, and prints prompts/s and new tokens/s for each, and how many answers
are identical. Neither way uses the response cache. On a GPU machine with vLLM
installed, ``--engine vllm`` times the in-process ``vllm`` runtime instead of a
server.

    python bench/serving.py [BUNDLE] [--limit N] [--concurrency K]

BUNDLE defaults to the newest adapters/support-ticket-json/vN.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed(runtime, requests) -> tuple[dict[str, list[str]], float]:
    started = time.perf_counter()
    answers = {side: runtime.generate(side, requests) for side in ("base", "adapter")}
    return answers, time.perf_counter() - started


def report(name: str, answers: dict[str, list[str]], seconds: float, tokenizer, prompts: int) -> None:
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for side in answers for a in answers[side])
    print(f"{name:>8}: {2 * prompts} answers in {seconds:7.1f} s  {2 * prompts / seconds:6.2f} answers/s  "
          f"{tokens / seconds:7.1f} new tokens/s")


def main() -> int:
    from bench.gate_run import newest_bundle
    from gatekeeper.bundle.manifest import OpenAIServing, VLLMServing
    from gatekeeper.check import prepare
    from gatekeeper.runtime.openai import OpenAIRuntime
    from tests.serving.vllm_server import vllm_server, vllm_unavailable_reason

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--engine", choices=["server", "vllm"], default="server")
    args = parser.parse_args()

    # The CPU server computes in float32: so does the reference here, or the answers would differ by
    # bfloat16 rounding (on a CPU with AVX512-BF16, dtype auto), not by how the engine serves the adapter.
    prepared = prepare(args.bundle or newest_bundle(), device="cpu" if args.engine == "server" else None,
                       serving={"dtype": "float32"} if args.engine == "server" else None)
    hf = prepared.runtime
    requests = [prepared.plan.ctx.task_request(item) for item in prepared.bundle.golden["eval"][: args.limit]]
    print(f"{prepared.bundle.manifest.name} v{prepared.bundle.manifest.version}: {len(requests)} prompts, "
          f"both sides, greedy, {requests[0].max_new_tokens} new tokens at most")

    if args.engine == "vllm":
        from gatekeeper.runtime.select import adapter_sha256
        from gatekeeper.runtime.vllm import VLLMRuntime

        engine = VLLMRuntime(VLLMServing(), prepared.base, prepared.bundle.adapter_dir,
                             adapter_sha256(prepared.bundle), dtype=prepared.bundle.manifest.serving.dtype)
        engine.connect()
        served, served_s = timed(engine, requests)
    else:
        reason = vllm_unavailable_reason()
        if reason:
            sys.exit(reason)
        started = time.perf_counter()
        rank = json.loads((prepared.bundle.adapter_dir / "adapter_config.json").read_text())["r"]
        with vllm_server(prepared.base.path, {"candidate": prepared.bundle.adapter_dir}, max_lora_rank=rank) as server:
            print(f"vLLM server ready in {time.perf_counter() - started:.1f} s at {server.base_url}")
            engine = OpenAIRuntime(OpenAIServing(base_url=server.base_url, base_model="base",
                                                 adapter_model="candidate", max_concurrency=args.concurrency),
                                   prepared.base)
            engine.connect()
            served, served_s = timed(engine, requests)
    reference, reference_s = timed(hf, requests)
    report(engine.name, served, served_s, hf.tokenizer, len(requests))
    report("hf", reference, reference_s, hf.tokenizer, len(requests))
    for side in ("base", "adapter"):
        same = sum(a == b for a, b in zip(served[side], reference[side]))
        print(f"{side}: {same}/{len(requests)} answers identical to the hf runtime's")
    print(f"{engine.name} / hf time: {served_s / reference_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
