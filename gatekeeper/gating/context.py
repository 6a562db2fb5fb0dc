"""What a gate may read: the bundle, its golden sets, contract, prompt and recipe, and the runtime's profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gatekeeper.bundle.goldens import Contract, GoldenItem
from gatekeeper.bundle.loading import LoadedBundle
from gatekeeper.bundle.manifest import PromptTemplate
from gatekeeper.bundle.recipe import Recipe
from gatekeeper.errors import BundleError
from gatekeeper.runtime.requests import Generate


@dataclass
class GateContext:
    bundle: LoadedBundle
    serving: dict | None = None
    """The runtime's serving profile (chat template, special and stop tokens), when it has one."""
    report_dir: Path | None = None
    """Where this check's reports go, for a gate that leaves an artifact beside them."""
    dtype: str = "float32"
    """The dtype the runtime really computes in (the bundle may say ``auto``)."""
    runtime_name: str = "hf"
    """The engine that answers this check's requests (``hf``, ``openai``, ``vllm``)."""

    @property
    def contract(self) -> Contract:
        return self.bundle.contract

    @property
    def prompt(self) -> PromptTemplate:
        return self.bundle.manifest.task.prompt

    @property
    def recipe(self) -> Recipe | None:
        """The recipe the candidate was trained with, when the bundle carries one (parsed while loading)."""
        return self.bundle.recipe

    def golden(self, name: str) -> list[GoldenItem]:
        """A golden set by name; a set the bundle lacks is the bundle's fault, reported before any model loads."""
        if name not in self.bundle.golden:
            raise BundleError(f"golden set {name!r} is not in the bundle (it has {', '.join(sorted(self.bundle.golden))})")
        return self.bundle.golden[name]

    def task_request(self, item: GoldenItem) -> Generate:
        """The one request every task gate asks for an item: same prompt, same decoding."""
        return Generate(self.prompt.messages(item.input), self.bundle.manifest.decoding.max_new_tokens)
