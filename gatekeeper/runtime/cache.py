"""On-disk cache of responses.

The key is the runtime's identity for the side (base hash, adapter hash,
chat-template hash, dtype, ...) plus the request (prompt and decoding). A
cache keyed by the prompt alone would silently serve one model's answers for
another.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

from gatekeeper._util.hashing import sha256_json
from gatekeeper.runtime.protocol import Capabilities, Runtime
from gatekeeper.runtime.requests import (
    Choose,
    CountTokens,
    Divergence,
    DivergenceResult,
    Generate,
    LogLik,
    LogLikResult,
    Progress,
    Side,
    Timing,
    TimingResult,
)


class ResponseCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get_many(self, keys: list[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put_many(self, items: dict[str, object]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in items.items()],
            )

    def close(self) -> None:
        self._db.close()


class CachedRuntime:
    """Wraps a runtime; only requests the cache has not seen reach the model."""

    def __init__(self, inner: Runtime, cache: ResponseCache):
        self.inner, self.cache = inner, cache
        self.hits = self.misses = 0

    # Everything but the answers is the wrapped runtime's own.
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dtype_name(self) -> str:
        return self.inner.dtype_name

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def identity(self, side: Side) -> dict:
        return self.inner.identity(side)

    def profile(self) -> dict | None:
        return self.inner.profile()

    def _keys(self, side: Side, requests) -> list[str]:
        identity = self.inner.identity(side)
        return [sha256_json({"runtime": identity, "request": r.key}) for r in requests]

    def _run(self, side, requests, call, encode, decode, progress):
        keys = self._keys(side, requests)
        found = self.cache.get_many(keys)
        if progress and found:
            progress(sum(1 for k in keys if k in found))
        todo = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        if todo:
            answers = call(side, [requests[i] for i in todo], progress)
            fresh = {keys[i]: encode(a) for i, a in zip(todo, answers)}
            self.cache.put_many(fresh)
            found.update(fresh)
        return [decode(found[k]) for k in keys]

    def generate(self, side: Side, requests: list[Generate], progress: Progress | None = None) -> list[str]:
        return self._run(side, requests, self.inner.generate, lambda a: a, lambda v: v, progress)

    def loglik(self, side: Side, requests: list[LogLik], progress: Progress | None = None) -> list[LogLikResult]:
        return self._run(
            side, requests, self.inner.loglik,
            lambda a: [a.logprob, a.tokens, a.greedy], lambda v: LogLikResult(*v), progress,
        )

    def choose(self, side: Side, requests: list[Choose], progress: Progress | None = None) -> list[list[float]]:
        return self._run(side, requests, self.inner.choose, list, list, progress)

    def count_tokens(self, side: Side, requests: list[CountTokens], progress: Progress | None = None) -> list[int]:
        # Not cached: counting takes the tokenizer alone and costs about what a lookup does.
        return self.inner.count_tokens(side, requests, progress)

    def divergence(self, side: Side, requests: list[Divergence], progress: Progress | None = None) -> list[DivergenceResult]:
        return self._run(side, requests, self.inner.divergence, dataclasses.asdict, lambda v: DivergenceResult(**v), progress)

    def timing(self, side: Side, requests: list[Timing], progress: Progress | None = None) -> list[TimingResult]:
        # Never cached, and not counted as hits or misses: a timing measures the machine now.
        return self.inner.timing(side, requests, progress)

    def export_merged(self, side: Side, requests: list, progress: Progress | None = None) -> list[dict]:
        # Never cached: the files written are the point.
        return self.inner.export_merged(side, requests, progress)
