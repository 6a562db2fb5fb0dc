"""Start and stop a real vLLM OpenAI-compatible server (the CPU build in .venv-vllm) for tests.

Pure stdlib and no gatekeeper imports: vLLM lives in its own venv (it pins torch and
transformers apart from .venv), so tests only ever talk to it over HTTP on 127.0.0.1.
`make vllm-env` builds that venv; where it could not, `vllm_unavailable_reason()` says why,
for a pytest.skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VLLM_VENV = REPO / ".venv-vllm"
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
STAMP = VLLM_VENV / ".installed"  # written by `make vllm-env` only once `import vllm` worked
UNAVAILABLE = VLLM_VENV / "UNAVAILABLE"  # written by `make vllm-env` instead, with the reason

# Everything the server does stays on this machine: engine sockets on loopback, no usage
# statistics sent home, no model hub. A small KV cache (GiB) keeps it beside the test suite.
SERVER_ENV = {
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
# The health check must never go through a proxy that http_proxy may name.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def vllm_unavailable_reason() -> str | None:
    """None when the vLLM venv is ready; otherwise a one-paragraph reason for pytest.skip."""
    if STAMP.is_file() and os.access(VLLM_PYTHON, os.X_OK):
        return None
    if UNAVAILABLE.is_file():
        return "vLLM (CPU build) could not be installed here: " + UNAVAILABLE.read_text().strip()
    return f"vLLM (CPU build) is not installed: run `make vllm-env` (builds {VLLM_VENV.name}/, ~3.5 GB)"


def free_port() -> int:
    """A port free on 127.0.0.1 right now (another process could still take it before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class VLLMServer:
    base_url: str  # http://127.0.0.1:PORT/v1, what an OpenAI client takes
    port: int
    log_path: Path
    served_name: str
    process: subprocess.Popen

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def models(self) -> dict:
        with _DIRECT.open(self.base_url + "/models", timeout=10) as r:
            return json.load(r)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def vllm_server(
    model_dir: str | os.PathLike,
    lora_modules: Mapping[str, str | os.PathLike],
    *,
    served_name: str = "base",
    extra_args: Sequence[str] = (),
    chat_template: str | os.PathLike | None = None,
    timeout_s: float = 300.0,
    max_lora_rank: int = 8,
    log_dir: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[VLLMServer]:
    """Serve `model_dir` as `served_name`, each LoRA adapter under its key; stop it at exit.

    Start-up on 2 CPU cores takes tens of seconds (see NOTES.md), so use it as a
    module- or session-scoped fixture. `chat_template` is a file path or the template text.
    """
    reason = vllm_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    workdir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="vllm-server-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"vllm-{port}.log"
    args = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",  # the `vllm` script wants a `vllm` dist
        "--host", "127.0.0.1", "--port", str(port),
        "--model", str(model_dir), "--served-model-name", served_name,
        "--dtype", "float32",  # the converted base is float32; the CPU build has no fast fp16
    ]  # fmt: skip
    if lora_modules:
        args += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--lora-modules"]
        args += [f"{name}={path}" for name, path in lora_modules.items()]
    if chat_template is not None:
        template = Path(chat_template) if Path(str(chat_template)).is_file() else None
        if template is None:  # template text: vLLM wants a file
            template = workdir / "chat_template.jinja"
            template.write_text(str(chat_template))
        args += ["--chat-template", str(template)]
    args += list(extra_args)
    full_env = {**os.environ, **SERVER_ENV, **(env or {})}
    with open(log_path, "wb") as log:
        # A session of its own, so stopping it takes the engine-core child processes too.
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=workdir, start_new_session=True)  # fmt: skip
    server = VLLMServer(f"http://127.0.0.1:{port}/v1", port, log_path, served_name, proc)
    try:
        _wait_ready(server, timeout_s)
        yield server
    finally:
        _stop(proc)


def _wait_ready(server: VLLMServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(f"vLLM exited with {code} before serving; last log lines:\n{server.log_tail()}")
        try:
            with _DIRECT.open(server.base_url + "/models", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:  # refused while it loads; URLError and timeouts are OSErrors too
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"vLLM did not answer within {timeout_s:.0f} s; last log lines:\n{server.log_tail()}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after grace_s."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children in its group may linger a moment after SIGTERM.
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5 if sig == signal.SIGTERM else 0)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)
