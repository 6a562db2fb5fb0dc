"""latency_memory: does the candidate fit the serving budget?

The base, the adapter unmerged and the merged model are each timed on the
same prompts, one request at a time, after warm-up, over repeated runs, on
the runtime the bundle's ``serving`` section names. Budgets are absolute
(p95 latency, tokens per second, peak memory) or relative to the base
(``max_latency_ratio``), and apply to the two ways of serving the adapter:
unmerged and merged. Without any budget the figures are reported and the
gate passes.

Timings are measurements of the machine now, so the response cache never
answers them, and a verdict with this gate differs between two checks of the
same bundle in these figures.
"""

from __future__ import annotations

from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import GateResult, Metric
from gatekeeper.runtime.requests import Timing

SIDES = ("base", "adapter", "merged")
SERVED = ("adapter", "merged")  # the two ways the candidate can ship; the base is the reference


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def figures(results) -> dict:
    latencies = [t for r in results for t in r.latency_ms]
    tokens = sum(r.new_tokens * len(r.latency_ms) for r in results)
    return {
        "p50_ms": round(percentile(latencies, 0.5), 3),
        "p95_ms": round(percentile(latencies, 0.95), 3),
        "first_token_p50_ms": round(percentile([t for r in results for t in r.first_token_ms], 0.5), 3),
        "tokens_per_second": round(tokens / (sum(latencies) / 1000), 3),
        "peak_mib": max(r.peak_mib for r in results),
        "memory": results[0].memory,
        "device": results[0].device,
        "runs": len(latencies),
    }


@gate("latency_memory")
class LatencyMemory:
    """p95 latency, time to first token, tokens/s and peak memory of base, adapter and merged model within budget."""

    sides = SIDES
    adapter_kinds = ("lora",)  # its merged side is a peft merge; a delta candidate serves merged already

    def __init__(
        self,
        golden_set: str = "eval",
        prompts: int = 8,
        repeats: int = 3,
        warmup: int = 2,
        max_new_tokens: int | None = None,
        max_p95_ms: float | None = None,
        min_tokens_per_second: float | None = None,
        max_peak_mib: float | None = None,
        max_latency_ratio: float | None = None,
    ):
        for name, value in (("prompts", prompts), ("repeats", repeats)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if warmup < 0 or (max_new_tokens is not None and max_new_tokens < 1):
            raise ValueError("warmup must be >= 0 and max_new_tokens >= 1")
        self.golden_set, self.prompts, self.repeats, self.warmup = golden_set, prompts, repeats, warmup
        self.max_new_tokens = max_new_tokens
        self.budgets = {"p95_ms": max_p95_ms, "tokens_per_second": min_tokens_per_second, "peak_mib": max_peak_mib,
                        "latency_ratio": max_latency_ratio}

    def _requests(self, ctx):
        budget = self.max_new_tokens or ctx.bundle.manifest.decoding.max_new_tokens
        items = ctx.golden(self.golden_set)[: self.prompts]
        return items, [Timing(ctx.prompt.messages(i.input), budget, self.repeats, self.warmup) for i in items]

    def requests(self, ctx):
        return self._requests(ctx)[1]

    def evaluate(self, ctx, responses):
        items, requests = self._requests(ctx)
        results = {side: [responses.get(side, r) for r in requests] for side in SIDES}
        figs = {side: figures(results[side]) for side in SIDES}
        for side in SERVED:
            figs[side]["latency_ratio"] = round(figs[side]["p95_ms"] / max(figs["base"]["p95_ms"], 1e-9), 4)

        breaches = []
        limits = {"p95_ms": ("<=", "p95 latency {v:.1f} ms > {b:g} ms"),
                  "tokens_per_second": (">=", "{v:.1f} tokens/s < {b:g}"),
                  "peak_mib": ("<=", "peak memory {v:.0f} MiB > {b:g} MiB"),
                  "latency_ratio": ("<=", "p95 latency {v:.2f}x the base's > {b:g}x")}
        for side in SERVED:
            for key, (direction, words) in limits.items():
                budget, value = self.budgets[key], figs[side][key]
                if budget is not None and (value > budget if direction == "<=" else value < budget):
                    breaches.append(f"{side}: " + words.format(v=value, b=budget))

        serving = ctx.bundle.manifest.serving
        measured_on = figs["adapter"]["device"]
        device_note = None
        if serving.device != "auto" and measured_on.split(":")[0] != serving.device.split(":")[0]:
            device_note = f"measured on {measured_on}, but the bundle serves on {serving.device}"
            if any(b is not None for b in self.budgets.values()):
                breaches.append(device_note + ": budgets do not apply to another device")

        metrics = []
        for key, unit, higher in (("p95_ms", "ms", False), ("p50_ms", "ms", False), ("first_token_p50_ms", "ms", False),
                                  ("tokens_per_second", "tokens/s", True), ("peak_mib", "MiB", False)):
            for side in SERVED:
                name = key if side == "adapter" else f"{key}_merged"
                base, value = figs["base"][key], figs[side][key]
                metrics.append(Metric(name=name, base=base, adapter=value, delta=round(value - base, 3),
                                      threshold=self.budgets.get(key), higher_is_better=higher, unit=unit))
        for side in SERVED:
            metrics.append(Metric(name="latency_ratio" if side == "adapter" else "latency_ratio_merged",
                                  adapter=figs[side]["latency_ratio"], threshold=self.budgets["latency_ratio"],
                                  higher_is_better=False))

        set_budgets = {k: v for k, v in self.budgets.items() if v is not None}
        rule = (("adapter (unmerged and merged): " + ", ".join(
            f"{k} {'>=' if k == 'tokens_per_second' else '<='} {v:g}" for k, v in set_budgets.items()))
            if set_budgets else "no budget set: figures reported only")
        rule += (f" ({len(items)} prompts x {self.repeats} runs after {self.warmup} warm-up, batch 1, "
                 f"{requests[0].max_new_tokens} new tokens each)")
        summary = "; ".join(breaches) if breaches else "within budget" if set_budgets else "figures reported"
        summary += " — p95 " + ", ".join(f"{s} {figs[s]['p95_ms']:.1f} ms" for s in SIDES)
        details = {
            "figures": figs,
            "cache": "bypassed: timings are measured on every check, never read from the response cache",
            "memory": f"{figs['adapter']['memory']} on {measured_on}"
                      + (" (every model the process holds, not the side alone)" if "RSS" in figs["adapter"]["memory"] else ""),
            "serving": serving.model_dump(),
        }
        if device_note:
            details["device"] = device_note
        # The slowest prompts, by the adapter's slowest run: where a budget breaks first.
        slowest = sorted(range(len(items)), key=lambda i: -max(results["adapter"][i].latency_ms))[:3]
        details["slowest_prompts_ms"] = {items[i].id: {s: max(results[s][i].latency_ms) for s in SIDES} for i in slowest}
        return GateResult(name=self.name, status="failed" if breaches else "passed", rule=rule, summary=summary,
                          metrics=metrics, details=details)
