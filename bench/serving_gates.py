"""Every gate of a bundle on a real vLLM server beside the hf runtime: the whole verdict, twice.

Copies the bundle, sets its check to float32 (vLLM's CPU build computes in
float32; a bfloat16 reference would differ from it by rounding, not by how it
serves the adapter) and adds ``serving_parity`` over every evaluation ticket,
starts vLLM's CPU build (``make vllm-env``) on 127.0.0.1 with the base and the
adapter, and checks the copy twice: on the ``hf`` runtime, then on the
``openai`` runtime against the server. Prints each gate's status and headline
figures side by side, and how long each check took. Neither check reuses
cached answers.

    python bench/serving_gates.py [BUNDLE] [--out DIR]

BUNDLE defaults to the newest adapters/support-ticket-json/vN.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def figures(gate: dict) -> str:
    """A gate's metrics as `name base→adapter`, or its summary where it has none."""
    def number(x):
        return "—" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    parts = [f"{m['name']} {number(m.get('base'))}→{number(m.get('adapter'))}" if m.get("base") is not None
             else f"{m['name']} {number(m.get('adapter'))}" for m in gate.get("metrics", [])[:3]]
    return "; ".join(parts) or (gate.get("summary") or "")[:70]


def main() -> int:
    from bench.gate_run import newest_bundle
    from gatekeeper.bundle.base import resolve_base
    from gatekeeper.cli import main as gatekeeper
    from tests.conftest import edit_manifest
    from tests.serving.vllm_server import vllm_server, vllm_unavailable_reason

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?")
    parser.add_argument("--out", help="where the two reports go (default: a temporary directory)")
    args = parser.parse_args()
    reason = vllm_unavailable_reason()
    if reason:
        sys.exit(reason)

    work = Path(args.out or tempfile.mkdtemp(prefix="serving-gates-"))
    bundle = work / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.copytree(args.bundle or newest_bundle(), bundle)

    def float32_with_parity(manifest: dict) -> None:
        manifest.setdefault("serving", {})["dtype"] = "float32"
        manifest["gates"] = [g for g in manifest["gates"] if g["name"] != "serving_parity"]
        manifest["gates"].append({"name": "serving_parity", "params": {"max_items": 10**6}})

    edit_manifest(bundle, float32_with_parity)
    rank = json.loads((bundle / "adapter" / "adapter_config.json").read_text())["r"]
    base = resolve_base(yaml.safe_load((bundle / "bundle.yaml").read_text())["base"]["ref"], relative_to=bundle)

    seconds, verdicts = {}, {}
    started = time.perf_counter()
    with vllm_server(base.path, {"candidate": bundle / "adapter"}, max_lora_rank=rank, log_dir=work / "log") as server:
        print(f"vLLM server ready in {time.perf_counter() - started:.1f} s at {server.base_url}", flush=True)
        for runtime, extra in (("hf", []), ("openai", ["--runtime", "openai", "--base-url", server.base_url,
                                                       "--base-model", "base", "--adapter-model", "candidate"])):
            started = time.perf_counter()
            code = gatekeeper(["check", str(bundle), "--out", str(work / runtime), "-q", "--no-cache", *extra])
            seconds[runtime] = time.perf_counter() - started
            verdicts[runtime] = json.loads((work / runtime / "verdict.json").read_text())
            print(f"{runtime}: exit {code} in {seconds[runtime]:.0f} s", flush=True)

    gates = {runtime: {g.get("id") or g["name"]: g for g in v["gates"]} for runtime, v in verdicts.items()}
    print(f"\n| gate | hf | openai (vLLM CPU) |\n| --- | --- | --- |")
    for name in gates["openai"]:
        hf, served = gates["hf"].get(name, {}), gates["openai"][name]
        print(f"| {name} | {hf.get('status', '—')}: {figures(hf)} | {served['status']}: {figures(served)} |")
    print(f"\nverdict: hf {verdicts['hf']['passed']}, openai {verdicts['openai']['passed']}; "
          f"check time hf {seconds['hf']:.0f} s, openai {seconds['openai']:.0f} s; reports under {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
