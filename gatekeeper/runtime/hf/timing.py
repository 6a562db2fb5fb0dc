"""Latency, time to first token, throughput and peak memory of a side, measured now.

One request at a time (batch size 1), as an interactive request is served,
after warm-up runs that pay for lazy initialisation (kernels picked, caches
allocated). Each run generates exactly ``max_new_tokens`` tokens, end of turn
or not, so every side does the same work and latencies compare like for like;
that is also the worst case a latency budget has to hold for.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` since a reset before
the side's runs; on the CPU, the process's resident-set high-water mark
(``VmHWM``), reset through ``/proc/self/clear_refs`` where Linux allows it,
else the peak since the process started. On the CPU it includes every model
the process holds, not just the one measured.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from pathlib import Path

from gatekeeper.runtime.prompts import render
from gatekeeper.runtime.requests import Progress, Timing, TimingResult


class _FirstToken:
    """A generate() streamer that notes when the first new token exists (its first call is the prompt)."""

    def __init__(self):
        self.calls, self.at = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            self.at = time.perf_counter()

    def end(self):
        pass


def _reset_peak(device) -> bool:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets the VmHWM high-water mark
        return True
    except OSError:
        return False


def _peak(device, was_reset: bool) -> tuple[float, str]:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda allocated"
    try:
        found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        found = None
    if found:
        return int(found.group(1)) / 1024, "process RSS" if was_reset else "process RSS since start"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 1024), "process RSS since start"


def measure(model, on_side, tokenizer, requests: list[Timing], progress: Progress | None = None) -> list[TimingResult]:
    """Time ``model`` inside the context ``on_side`` (which puts it on the side measured)."""
    import torch

    if not requests:
        return []
    device = model.device
    prompts = [tokenizer(render(tokenizer, r.messages), return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
               for r in requests]

    def run(prompt, budget: int) -> tuple[float, float]:
        streamer = _FirstToken()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.generate(input_ids=prompt, attention_mask=prompt.new_ones(prompt.shape), do_sample=False,
                       max_new_tokens=budget, min_new_tokens=budget, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, streamer=streamer)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        end = time.perf_counter()
        return (end - start) * 1000, ((streamer.at or end) - start) * 1000

    results = []
    with torch.inference_mode(), on_side:
        for _ in range(max(r.warmup for r in requests)):
            run(prompts[0], requests[0].max_new_tokens)
        was_reset = _reset_peak(device)
        runs = []
        for prompt, request in zip(prompts, requests):
            runs.append([run(prompt, request.max_new_tokens) for _ in range(request.repeats)])
            if progress:
                progress(1)
        peak, what = _peak(device, was_reset)
    for request, timed in zip(requests, runs):
        results.append(TimingResult(
            latency_ms=[round(t, 3) for t, _ in timed], first_token_ms=[round(f, 3) for _, f in timed],
            new_tokens=request.max_new_tokens, peak_mib=round(peak, 1), memory=what, device=str(device),
        ))
    return results
