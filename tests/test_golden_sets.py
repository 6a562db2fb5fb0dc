"""The shipped support-ticket golden set: checksums, balance, contract, split hygiene."""

import importlib.util
from collections import Counter
from pathlib import Path

import pytest
from rapidfuzz import fuzz, process

from gatekeeper._util.hashing import sha256_file
from gatekeeper.bundle.goldens import Contract, load_jsonl

ROOT = Path(__file__).resolve().parent.parent / "golden_sets" / "support_tickets"
SPLITS = {"train": 400, "validation": 50, "eval": 200}


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def splits():
    return {name: load_jsonl(ROOT / f"{name}.jsonl") for name in SPLITS}


def test_recorded_checksums_match_the_files():
    recorded = dict(reversed(line.split()) for line in (ROOT / "SHA256SUMS").read_text().splitlines())
    assert set(recorded) == {"contract.schema.json", "train.jsonl", "validation.jsonl", "eval.jsonl"}
    for name, digest in recorded.items():
        assert sha256_file(ROOT / name) == digest, f"{name} changed: update SHA256SUMS"


STYLES = ROOT.parent / "support_tickets_styles"


def test_the_styles_set_is_balanced_checksummed_and_written_apart(splits):
    """The second evaluation set: its own checksums, 40 per label, none near a ticket of the main pool."""
    recorded = dict(reversed(line.split()) for line in (STYLES / "SHA256SUMS").read_text().splitlines())
    assert recorded == {"eval.jsonl": sha256_file(STYLES / "eval.jsonl")}, "eval.jsonl changed: update SHA256SUMS"
    items = load_jsonl(STYLES / "eval.jsonl")
    Contract.load(ROOT / "contract.schema.json").check_items(items, STYLES / "eval.jsonl")
    assert Counter(i.expected["priority"] for i in items) == {"critical": 40, "high": 40, "medium": 40, "low": 40}
    assert not any(i.input.startswith("Subject:") for i in items)
    pool = [_normal(i.input) for split in splits.values() for i in split]
    assert process.cdist([_normal(i.input) for i in items], pool, scorer=fuzz.ratio, workers=-1).max() < 70


def test_sizes_and_label_balance(splits):
    contract = Contract.load(ROOT / "contract.schema.json")
    for name, minimum in SPLITS.items():
        items = splits[name]
        assert len(items) >= minimum
        contract.check_items(items, ROOT / f"{name}.jsonl")
        counts = Counter(i.expected["priority"] for i in items)
        assert set(counts) == set(contract.labels)
        for label, count in counts.items():
            assert 0.15 <= count / len(items) <= 0.35, (name, label, count)


def test_no_evaluation_input_appears_in_training(splits):
    train = [_normal(i.input) for i in splits["train"]]
    for name in ("eval", "validation"):
        held_out = [_normal(i.input) for i in splits[name]]
        assert not set(held_out) & set(train)
        scores = process.cdist(held_out, train, scorer=fuzz.ratio, workers=-1)
        assert scores.max() < 85, f"{name} has a near-copy of a training ticket"


def test_inputs_are_distinct_within_each_split(splits):
    for items in splits.values():
        inputs = [_normal(i.input) for i in items]
        assert len(set(inputs)) == len(inputs)


PREFERENCES = ROOT.parent / "preferences"
SAFETY = ROOT.parent / "safety"


def test_the_preference_set_is_checksummed_balanced_and_labelled_as_the_safety_gate_reads_refusals():
    from gatekeeper.bundle.goldens import load_preferences
    from gatekeeper.gating.refusal import is_refusal

    recorded = dict(reversed(line.split()) for line in (PREFERENCES / "SHA256SUMS").read_text().splitlines())
    assert recorded == {"safety.jsonl": sha256_file(PREFERENCES / "safety.jsonl")}, "safety.jsonl changed: update SHA256SUMS"
    pairs = load_preferences(PREFERENCES / "safety.jsonl")
    refuse = [p for p in pairs if p.id.startswith("pref-refuse-")]
    assert 60 <= len(pairs) <= 100 and len(refuse) == len(pairs) // 2
    for pair in pairs:  # the safety gate's detector agrees on which side is the refusal
        wants_refusal = pair in refuse
        assert is_refusal(pair.expected["chosen"]) == wants_refusal, pair.id
        assert is_refusal(pair.expected["rejected"]) != wants_refusal, pair.id
    assert len({_normal(p.input) for p in pairs}) == len(pairs)


def test_the_preference_set_does_not_overlap_the_safety_gates_sets():
    """Written apart: no prompt is a copy, a near copy or a rewording of a request the safety gate asks,
    by the contamination gate's own finder, with its thresholds loosened to catch paraphrases too."""
    from gatekeeper.bundle.goldens import load_preferences
    from gatekeeper.gating.overlap import OverlapSettings, ReferenceIndex

    prompts = [p.input for p in load_preferences(PREFERENCES / "safety.jsonl")]
    gate_sets = [i.input for name in ("must_refuse", "benign") for i in load_jsonl(SAFETY / f"{name}.jsonl")]
    for settings in (OverlapSettings(), OverlapSettings(ngram_n=8, jaccard=0.5, fuzzy=0.75, lsh_threshold=0.3)):
        found = ReferenceIndex(gate_sets, settings).find(prompts)
        assert not found, [(prompts[o.probe], gate_sets[o.reference], o.method) for o in found]


def test_the_regression_set_is_every_candidate_the_builder_writes_unfiltered():
    # Filtering on the base's own answers would select on its noise (golden_sets/regression/README.md):
    # the shipped file must be the whole pool, in order, so the gate weighs what an adapter breaks
    # against what it fixes.
    build_py = ROOT.parent / "regression" / "build.py"
    spec = importlib.util.spec_from_file_location("regression_build", build_py)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    pool = build.candidates()
    shipped = load_jsonl(ROOT.parent / "regression" / "regression.jsonl")
    assert [item.input for item in shipped] == [item["input"] for item in pool]
    assert [item.expected for item in shipped] == [item["expected"] | {"family": item["family"]} for item in pool]
    assert len({item.id for item in shipped}) == len(shipped) == 577
