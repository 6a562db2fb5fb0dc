"""Shared fixtures: a tiny Llama built from a config, its tokenizer, a tiny task, a trained tiny bundle.

Everything is made on the fly from code: no downloads, seconds not minutes.
The one test on the real embedded model lives in test_e2e.py.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONTRACT = REPO / "golden_sets" / "support_tickets" / "contract.schema.json"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LABELS = ["critical", "high", "medium", "low"]
# pytest's own fixture for testing plugins: runs pytest inside a test, here with --gatekeeper-bundle
pytest_plugins = ["pytester"]

PROMPT_USER = 'Classify this ticket as JSON with "priority" and "reason".\nTicket:\n{input}'


@pytest.fixture(scope="session", autouse=True)
def _isolated_dirs(tmp_path_factory):
    """Keep the tests' response cache, converted models and signing key away from the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GATEKEEPER_CACHE_DIR", str(tmp_path_factory.mktemp("gk-cache")))
    mp.setenv("GATEKEEPER_CONFIG_DIR", str(tmp_path_factory.mktemp("gk-config")))
    yield
    mp.undo()


def edit_manifest(bundle: Path, change, resign: bool = True) -> None:
    """Change bundle.yaml as its author would: edit, then sign again."""
    import yaml

    from gatekeeper.bundle.signing import sign_bundle

    path = bundle / "bundle.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if resign:
        sign_bundle(bundle)


def tiny_items(prefix: str, count: int, offset: int = 0) -> list[dict]:
    """Synthetic tickets whose label is readable from one keyword, so a tiny model can learn it."""
    words = {"critical": "outage", "high": "broken", "medium": "slow", "low": "typo"}
    items = []
    for k in range(count):
        label = LABELS[(k + offset) % 4]
        n = k + offset
        items.append({
            "id": f"{prefix}-{k:04d}",
            "input": f"ticket {n}: the {words[label]} in area {n * 7 % 97}",
            "expected": {"priority": label, "reason": f"{words[label]} impact"},
        })
    return items


# A fixed vocabulary of made-up words: two texts drawn from it share words only by chance.
_SYLLABLES = "ba ko mi re su ta vo ne li gu fa de pi ro ha ze".split()
VOCABULARY = sorted({"".join(random.Random(k).choices(_SYLLABLES, k=3)) for k in range(3000)})


def distinct_items(prefix: str, count: int, seed: int, words: int = 20) -> list[dict]:
    """Items of random words with balanced labels: clean data, so any overlap found in it was planted."""
    rng = random.Random(seed)
    return [
        {
            "id": f"{prefix}-{k:04d}",
            "input": " ".join(rng.choices(VOCABULARY, k=words)),
            "expected": {"priority": LABELS[k % 4], "reason": f"{rng.choice(VOCABULARY)} impact"},
        }
        for k in range(count)
    ]


# Ordinary requests that are not the tiny task: the first 16 a rehearsal pool, the rest held out.
OTHER_REQUESTS = [f"note {k}: tell me about the {w} near lake {k * 5}" for k, w in
                  enumerate(["weather", "birds", "music", "trees", "boats", "bread", "lamps", "clouds"] * 3)]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return path


def replace_golden_sets(bundle: Path, gates: list[dict], **sets: list[dict]) -> Path:
    """Write golden sets into a bundle (new names are added), record their hashes and the gates, sign again."""
    from gatekeeper._util.hashing import sha256_file

    for name, items in sets.items():
        write_jsonl(bundle / "data" / f"{name}.jsonl", items)

    def change(data):
        for name in sets:
            path = f"data/{name}.jsonl"
            data["golden_sets"][name] = {"path": path, "sha256": sha256_file(bundle / path)}
        data["gates"] = gates

    edit_manifest(bundle, change)
    return bundle


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer Llama with a small byte-level BPE tokenizer and a ChatML template, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny-base")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [json.dumps(i) for i in tiny_items("c", 64)] + [PROMPT_USER, "system user assistant"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                        unk_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(root)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(root, safe_serialization=True)
    return root


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-task")
    write_jsonl(root / "train.jsonl", tiny_items("train", 48))
    write_jsonl(root / "validation.jsonl", tiny_items("validation", 8, offset=100))
    write_jsonl(root / "eval.jsonl", tiny_items("eval", 16, offset=200))
    shutil.copyfile(CONTRACT, root / "contract.schema.json")
    return root


def write_recipe(directory: Path, base_dir: Path, task: Path, **overrides) -> Path:
    import yaml

    recipe = {
        "name": "tiny",
        "base": str(base_dir),
        "adapter": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {
            "train": str(task / "train.jsonl"), "validation": str(task / "validation.jsonl"),
            "eval": str(task / "eval.jsonl"), "contract": str(task / "contract.schema.json"),
            "prompt": {"user": PROMPT_USER},
        },
        "training": {"batch_size": 8, "max_steps": 6, "eval_every": 3, "learning_rate": 0.01, "warmup_steps": 1},
        "gates": [{"name": "json_parse", "params": {"min_rate": 0.0}},
                  {"name": "task_accuracy", "params": {"min_delta": -1.0, "require_significant": False}}],
        "decoding": {"max_new_tokens": 12},
        "serving": {"device": "cpu"},
    }
    for key, value in overrides.items():
        recipe[key] = value
    # float32 unless a test asks otherwise: tiny runs then match on machines with and without native bfloat16
    recipe["training"].setdefault("precision", "float32")
    recipe["serving"].setdefault("dtype", "float32")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def two_tiny_versions(tmp_path: Path, tiny_base: Path, tiny_task: Path,
                      provenance: dict | None = None) -> tuple[Path, Path, Path]:
    """adapters/tiny/v1 and v2 from one short run, laid out as `gatekeeper train` writes them, and the registry path.

    ``provenance`` goes into the recipe's ``data.provenance`` (set name -> source, licence, customer_data).
    """
    import yaml

    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.training.loop import train
    from gatekeeper.training.versions import write_candidate

    path = write_recipe(tmp_path / "adapters" / "tiny", tiny_base, tiny_task, training={"max_steps": 2, "eval_every": 2})
    if provenance is not None:
        written = yaml.safe_load(path.read_text())
        written["data"]["provenance"] = provenance
        path.write_text(yaml.safe_dump(written, sort_keys=False), encoding="utf-8")
    recipe, root = load_recipe(path)
    result = train(recipe, root)
    v1, v2 = write_candidate(result, recipe, root), write_candidate(result, recipe, root)
    return v1, v2, tmp_path / "adapters" / "versions.sqlite"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_base, tiny_task) -> Path:
    """A candidate trained for a few steps on the tiny model: a real, valid bundle."""
    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.training.loop import train
    from gatekeeper.training.versions import write_candidate

    recipe_path = write_recipe(tmp_path_factory.mktemp("tiny-candidates"), tiny_base, tiny_task)
    recipe, root = load_recipe(recipe_path)
    return write_candidate(train(recipe, root), recipe, root)


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, target)

    def absolute_base(data):  # a directory base is written relative to the bundle
        data["base"]["ref"] = str((tiny_bundle / data["base"]["ref"]).resolve())

    edit_manifest(target, absolute_base)
    return target


def fake_bundle(golden: dict[str, list[dict]]):
    """An in-memory bundle for gate logic on a fake runtime: no files, no model."""
    from gatekeeper.bundle.goldens import Contract, GoldenItem
    from gatekeeper.bundle.loading import LoadedBundle
    from gatekeeper.bundle.manifest import (
        AdapterRef,
        BaseRef,
        Bundle,
        FileRef,
        PromptTemplate,
        TaskSpec,
    )

    ref = FileRef(path="x", sha256="0" * 64)
    manifest = Bundle(
        name="fake", version=1,
        base=BaseRef(ref="fake", sha256="0" * 64, tokenizer_sha256="0", chat_template_sha256="0"),
        adapter=AdapterRef(files={}), task=TaskSpec(contract=ref, prompt=PromptTemplate()),
        golden_sets={name: ref for name in golden}, gates=[],
    )
    loaded = {name: [GoldenItem(i["id"], i["input"], i["expected"], n) for n, i in enumerate(items, 1)]
              for name, items in golden.items()}
    return LoadedBundle(root=CONTRACT.parent, manifest=manifest, manifest_sha256="0",
                        contract=Contract.load(CONTRACT), golden=loaded)


@pytest.fixture(scope="session")
def ranked_candidates(tmp_path_factory, tiny_base, tiny_task):
    """Two candidates that differ only in LoRA rank (v1: r=4, v2: r=16), each checked into reports/<name>/v<N>.

    Trained long enough to answer some items right: the tiny model writes the
    13-token answer but never learns to stop, so the token budget is exactly
    13 and each item's label decides its outcome. Returns the working
    directory that holds ``reports/`` and the two bundles.
    """
    import torch

    workdir = tmp_path_factory.mktemp("ranked")
    # One thread: a model this small gains nothing from two, and on a busy machine
    # spinning OpenMP threads slowed these 400 steps from seconds to minutes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        v1, v2 = (_ranked_candidate(workdir, rank, tiny_base, tiny_task) for rank in (4, 16))
    finally:
        torch.set_num_threads(threads)
    return workdir, v1, v2


def _ranked_candidate(workdir: Path, rank: int, tiny_base: Path, tiny_task: Path) -> Path:
    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.cli import main
    from gatekeeper.training.loop import train
    from gatekeeper.training.versions import write_candidate

    recipe_path = write_recipe(
        workdir / f"recipe-r{rank}", tiny_base, tiny_task,
        adapter={"r": rank, "alpha": 2 * rank, "dropout": 0.0},
        training={"batch_size": 8, "max_steps": 200, "eval_every": 50, "learning_rate": 0.01, "warmup_steps": 1},
        decoding={"max_new_tokens": 13},
        output_dir=str(workdir / "adapters" / "tiny"),
    )
    recipe, root = load_recipe(recipe_path)
    bundle = write_candidate(train(recipe, root), recipe, root)
    assert main(["check", str(bundle), "--out", str(workdir / "reports" / "tiny" / bundle.name), "-q"]) == 0
    return bundle


@pytest.fixture(scope="module")
def one_thread():
    """Run torch on one thread: tiny models gain nothing from two, and on a busy
    2-core machine OpenMP threads spinning against other work make each forward
    pass ten times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_candidate(tmp_path_factory):
    """The demo's quick recipe trained once on the embedded base, shared by the end-to-end and serving
    tests (training it is the slowest step of the suite: minutes on a CPU)."""
    import yaml

    from gatekeeper.cli import main

    recipe_path = Path(__file__).resolve().parent.parent / "adapters" / "support-ticket-json-quick" / "recipe.yaml"
    pytest.importorskip("gguf")
    workdir = tmp_path_factory.mktemp("e2e")
    recipe = yaml.safe_load(recipe_path.read_text())
    for key in ("train", "validation", "eval", "contract"):
        recipe["data"][key] = str((recipe_path.parent / recipe["data"][key]).resolve())
    recipe["data"]["extra"] = {}
    if recipe["data"].get("rehearsal"):
        rehearsal = recipe["data"]["rehearsal"]
        rehearsal["prompts"] = str((recipe_path.parent / rehearsal["prompts"]).resolve())
    # The demo runs every gate (minutes more on a CPU); this test pins the task path.
    recipe["gates"] = [g for g in recipe["gates"]
                       if g["name"] in ("json_parse", "task_accuracy", "template_drift") and "id" not in g]
    # What it pins is the format and the average gain: twenty steps leave some labels starved.
    for g in recipe["gates"]:
        g.get("params", {}).pop("min_label_accuracy", None)
    recipe["output_dir"] = str(workdir / "candidates")
    (workdir / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert main(["train", str(workdir / "recipe.yaml"), "-q"]) == 0
    return workdir / "candidates" / "v1", workdir


@pytest.fixture(scope="session")
def regression_sets(tiny_bundle, tmp_path_factory):
    """A regression set of what the tiny base itself answers, so the base is right on every item,
    and control texts: the golden sets the regression gate reads."""
    from gatekeeper.bundle.manifest import messages_for
    from gatekeeper.check import prepare
    from gatekeeper.runtime.requests import Generate

    root = tmp_path_factory.mktemp("regression-sets")
    runtime = prepare(tiny_bundle).runtime
    prompts = [f"question {k}: say something about {w}" for k, w in enumerate(["cats", "rain", "trains", "bread"] * 6)]
    answers = runtime.generate("base", [Generate(messages_for(p), 8) for p in prompts])
    # a random tiny model mostly emits whitespace: "only" then expects exactly that (nothing)
    items = [{"id": f"reg-{k:03d}", "input": p, "expected": {"answer": a.strip(), "match": "only", "family": "echo"}}
             for k, (p, a) in enumerate(zip(prompts, answers))]
    write_jsonl(root / "regression.jsonl", items)
    write_jsonl(root / "control.jsonl", [{"id": f"c{k}", "input": f"ticket {k}: the slow in area {k}", "expected": None}
                                         for k in range(6)])
    return root
