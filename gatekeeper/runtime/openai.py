"""The ``openai`` runtime: a running OpenAI-compatible server answers for base and adapter.

One served model name per side (vLLM: the base's ``--served-model-name`` and a
``--lora-modules`` name). Greedy generation goes through chat completions, so
the server's own chat template and stop tokens decide the answer, as they will
for users. Log-likelihoods and label scores go through completions with
``echo`` and ``logprobs`` on token ids rendered here by the base's chat template
(``gatekeeper.runtime.prompts``), where the server returns prompt
log-probabilities; ``connect`` probes whether it does. Token counts need the
tokenizer alone and are answered locally. The merged side, divergence and
timings are the ``hf`` runtime's.

Requests run concurrently from a bounded pool; the client retries connection
errors, timeouts and 5xx answers with exponential backoff (the ``openai``
package's own retry loop). Every answer is stored at its request's index, so a
retry can neither duplicate nor lose one.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable

from gatekeeper._util.text import first_line, shorten
from gatekeeper.bundle.base import ResolvedBase
from gatekeeper.bundle.manifest import OpenAIServing
from gatekeeper.errors import BundleError, RuntimeLoadError
from gatekeeper.runtime.prompts import (
    TokenizerOnlyRequests,
    context_ids,
    load_tokenizer,
)
from gatekeeper.runtime.protocol import Capabilities
from gatekeeper.runtime.requests import (
    Choose,
    Generate,
    LogLik,
    LogLikResult,
    Progress,
    Side,
)

SIDES = frozenset({"base", "adapter"})
NOT_HERE = "measured on the hf runtime (gatekeeper check without --runtime): it needs the weights in this process"


class OpenAIRuntime(TokenizerOnlyRequests):
    name = "openai"

    def __init__(self, settings: OpenAIServing, base: ResolvedBase):
        self.settings, self.base = settings, base
        self.dtype_name = "served"  # the server's own: the merge tolerances that read it are not answered here
        self._tokenizer = None
        self._client = None
        self._served: dict[str, dict] = {}  # model name -> what /v1/models says of it
        self._version = ""
        self._logprobs_problem: str | None = "not probed yet"

    # -- set-up, before any gate runs ----------------------------------------
    @property
    def endpoint(self) -> str:
        return self.settings.base_url.rstrip("/")

    def _api_key(self) -> str:
        variable = self.settings.api_key_env
        if variable is None:
            return "EMPTY"  # vLLM and llama.cpp accept any key when started without one
        if not os.environ.get(variable):
            raise BundleError(f"serving.openai.api_key_env names {variable!r}, which is not set")
        return os.environ[variable]

    @property
    def client(self):
        if self._client is None:
            import openai  # deferred: only a check on a server needs the client

            host = urllib.parse.urlsplit(self.endpoint).hostname or ""
            # A server on this machine is never reached through a proxy the environment names.
            loopback = host in ("localhost", "::1") or host.startswith("127.")
            self._client = openai.OpenAI(
                base_url=self.endpoint, api_key=self._api_key(), max_retries=self.settings.max_retries,
                timeout=self.settings.timeout_s,
                http_client=openai.DefaultHttpxClient(trust_env=not loopback, timeout=self.settings.timeout_s),
            )
        return self._client

    def _failure(self, exc: Exception) -> RuntimeLoadError:
        """One line naming the endpoint and what went wrong, for any error the client raises."""
        import openai

        if isinstance(exc, openai.APITimeoutError):
            what = f"no answer within {self.settings.timeout_s:g} s (after {self.settings.max_retries} retries)"
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            what = f"unreachable ({shorten(first_line(cause), 160)})"
        elif isinstance(exc, openai.APIStatusError):
            what = f"answered HTTP {exc.status_code}: {shorten(first_line(exc), 200)}"
        else:
            what = shorten(first_line(exc), 200)
        return RuntimeLoadError(f"serving endpoint {self.endpoint}: {what}")

    def connect(self) -> None:
        """Reach the server, check it serves both model names, and probe prompt log-probabilities.

        Called while the check is prepared: an unreachable endpoint, a model name the server does
        not know or a server that does not answer in time stops the check with one line, before
        any gate runs.
        """
        try:
            listed = {m.id: m.model_dump() for m in self.client.models.list()}
        except Exception as exc:
            raise self._failure(exc) from None
        for field in ("base_model", "adapter_model"):
            name = getattr(self.settings, field)
            if name not in listed:
                known = ", ".join(sorted(listed)) or "none"
                raise RuntimeLoadError(f"serving endpoint {self.endpoint} serves no model {name!r} "
                                       f"(serving.openai.{field}; it serves: {shorten(known, 200)})")
        self._served = {name: listed[name] for name in (self.settings.base_model, self.settings.adapter_model)}
        self._version = self._server_version()
        self._logprobs_problem = self._probe_logprobs()

    def _server_version(self) -> str:
        """vLLM answers ``/version``; other servers may not, and then the identity says so."""
        root = self.endpoint.removesuffix("/v1")
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"{root}/version", timeout=min(10.0, self.settings.timeout_s)) as answer:
                return str(json.loads(answer.read().decode("utf-8")).get("version", ""))
        except Exception:  # noqa: BLE001 - an optional extra: absent on servers that do not expose it
            return ""

    def _probe_logprobs(self) -> str | None:
        """None when the server returns prompt log-probabilities; otherwise why not."""
        ids = self.tokenizer("Hello there", add_special_tokens=False)["input_ids"]
        try:
            scored = self._prompt_logprobs(self.settings.base_model, ids)
        except RuntimeLoadError as exc:
            if "HTTP 4" in str(exc):  # the server refused echo/logprobs: a capability, not a fault
                return f"the server refuses prompt log-probabilities ({shorten(str(exc), 160)})"
            raise
        if len(scored) != len(ids) or any(lp is None for lp, _ in scored[1:]):
            return "the server's completions do not echo a log-probability for every prompt token"
        return None

    # -- the protocol ---------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.base.path)
        return self._tokenizer

    def capabilities(self) -> Capabilities:
        sides: dict = {"generate": SIDES, "tokens": SIDES}
        why = {k: f"the openai runtime does not serve it: {NOT_HERE}" for k in ("divergence", "export", "timing")}
        if self._logprobs_problem is None:
            sides |= {"loglik": SIDES, "choose": SIDES}
        else:
            why |= {k: self._logprobs_problem for k in ("loglik", "choose")}
        return Capabilities(sides, why)

    def identity(self, side: Side) -> dict:
        name = self._model(side)
        served = self._served.get(name, {})
        return {
            "runtime": "openai", "endpoint": self.endpoint, "server_version": self._version, "model": name,
            # what the server reports of the model: vLLM names the weights' path (root) and a LoRA's parent
            "served": {k: served.get(k) for k in ("id", "root", "parent", "owned_by", "max_model_len") if k in served},
            "base_sha256": self.base.sha256, "side": side,
        }

    def profile(self) -> dict | None:
        """Unknown: a server does not say which chat template it applies (serving_parity tests it instead)."""
        return None

    def _model(self, side: Side) -> str:
        if side not in SIDES:
            raise ValueError(f"side {side!r} is not served by the openai runtime")
        return self.settings.base_model if side == "base" else self.settings.adapter_model

    def _each(self, jobs: list[Callable[[], object]], progress: Progress | None, workers: int) -> list:
        """Run ``jobs`` on a pool of ``workers``; each answer lands at its job's index."""
        answers: list = [None] * len(jobs)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(job): index for index, job in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    answers[futures[future]] = future.result()
                    if progress:
                        progress(1)
            except Exception:
                for future in futures:
                    future.cancel()
                raise
        return answers

    def _call(self, method, **kwargs):
        try:
            return method(**kwargs)
        except Exception as exc:
            raise self._failure(exc) from None

    def generate(self, side: Side, requests: list[Generate], progress: Progress | None = None) -> list[str]:
        model = self._model(side)

        def ask(request: Generate) -> str:
            answer = self._call(
                self.client.chat.completions.create, model=model, temperature=0.0, n=1,
                max_tokens=request.max_new_tokens,
                messages=[{"role": role, "content": content} for role, content in request.messages],
            )
            return answer.choices[0].message.content or ""

        return self._each([lambda r=r: ask(r) for r in requests], progress, self.settings.max_concurrency)

    def _prompt_logprobs(self, model: str, ids: list[int]) -> list[tuple[float | None, bool]]:
        """Each prompt token's log-probability and whether it was the most likely token there.

        vLLM also answers ``prompt_logprobs`` keyed by token id with each token's rank, which is
        exact; the standard ``logprobs.top_logprobs`` is keyed by decoded text, where two tokens
        that decode alike collide, so it is only the fallback for other servers.
        """
        answer = self._call(self.client.completions.create, model=model, prompt=ids, echo=True, logprobs=1,
                            max_tokens=1, temperature=0.0)
        choice = answer.choices[0]
        by_id = getattr(choice, "prompt_logprobs", None)
        if by_id is not None:
            scored = []
            for token, entry in zip(ids, by_id):
                info = (entry or {}).get(str(token)) or (entry or {}).get(token)
                scored.append((info["logprob"], info.get("rank") == 1) if info else (None, False))
            return scored
        logprobs = choice.logprobs
        values = list(logprobs.token_logprobs or [])[: len(ids)]
        tops = list(logprobs.top_logprobs or [])[: len(ids)]
        tokens = list(logprobs.tokens or [])[: len(ids)]
        scored = []
        for position, value in enumerate(values):
            top = tops[position] if position < len(tops) else None
            best = max(top.items(), key=lambda kv: kv[1])[0] if top else None
            scored.append((value, best is not None and position < len(tokens) and best == tokens[position]))
        return scored

    def _continuation(self, model: str, context: list[int], continuation: list[int]) -> LogLikResult:
        scored = self._prompt_logprobs(model, context + continuation)[len(context):]
        if len(scored) != len(continuation) or any(value is None for value, _ in scored):
            raise RuntimeLoadError(f"serving endpoint {self.endpoint}: completions echoed {len(scored)} "
                                   f"log-probabilities for {len(continuation)} continuation tokens")
        return LogLikResult(float(sum(v for v, _ in scored)), len(continuation), all(top for _, top in scored))

    def loglik(self, side: Side, requests: list[LogLik], progress: Progress | None = None) -> list[LogLikResult]:
        model, tokenizer = self._model(side), self.tokenizer
        jobs = []
        for r in requests:
            context = context_ids(tokenizer, r.messages)
            continuation = tokenizer(r.continuation, add_special_tokens=False)["input_ids"]
            jobs.append(lambda c=context, a=continuation: self._continuation(model, c, a))
        return self._each(jobs, progress, self.settings.scoring_concurrency)

    def choose(self, side: Side, requests: list[Choose], progress: Progress | None = None) -> list[list[float]]:
        model, tokenizer = self._model(side), self.tokenizer
        jobs = []
        for r in requests:
            context = context_ids(tokenizer, r.messages)
            options = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in r.options]
            jobs.append(lambda c=context, o=options: [self._continuation(model, c, a).logprob for a in o])
        return self._each(jobs, progress, self.settings.scoring_concurrency)
