"""dataset_audit: one planted fault per rule fails that rule alone; clean data passes."""

import json

import pytest

from gatekeeper.bundle.loading import load_bundle
from gatekeeper.check import prepare, run_check
from gatekeeper.cli import main
from gatekeeper.gating.engine import run_gates
from gatekeeper.gating.registry import get_gate
from gatekeeper.testing import FakeRuntime
from tests.conftest import distinct_items, edit_manifest, replace_golden_sets

TRAIN = distinct_items("train", 80, seed=21)
VALIDATION = distinct_items("validation", 12, seed=22)
EVAL = distinct_items("eval", 24, seed=23)
GATES = [{"name": "dataset_audit"}]


def with_sets(bundle, **sets):
    return replace_golden_sets(bundle, GATES, **({"train": TRAIN, "validation": VALIDATION, "eval": EVAL} | sets))


def audit(bundle, **params):
    runtime = FakeRuntime({})  # counts one token per word
    result, = run_gates(load_bundle(bundle), [(get_gate("dataset_audit").build(params), True)], runtime)
    return result, runtime


def renamed(item: dict, new_id: str, **changes) -> dict:
    return item | {"id": new_id} | changes


def test_clean_data_passes_every_check(bundle_copy):
    result, runtime = audit(with_sets(bundle_copy))
    assert result.status == "passed", result.summary
    assert result.details["failed"] == [] and result.evidence == []
    assert {m.name: m.adapter for m in result.metrics} == {
        "exact_duplicates": 0, "near_duplicate_share": 0.0, "split_overlaps": 0,
        "min_label_share": 0.25, "contract_violations": 0, "truncated_share": 0.0,
    }
    # token counts for the sets training encodes, asked once, of the base side only
    assert runtime.calls == [("base", 80 + 12)]
    assert result.details["truncation"]["source"] == "recipe" and result.details["truncation"]["max_seq_len"] == 256


def test_an_exact_duplicate_fails_and_names_both_rows(bundle_copy):
    copy = renamed(TRAIN[5], "train-again", input=TRAIN[5]["input"].upper() + "!")
    result, _ = audit(with_sets(bundle_copy, train=TRAIN + [copy]))
    assert result.details["failed"] == ["exact_duplicates"]
    assert result.metric("exact_duplicates").adapter == 1
    assert result.evidence[0].id == "train/train-again" and "train/train-0005" in result.evidence[0].note
    assert "different answer" not in result.evidence[0].note


def test_a_duplicate_with_another_answer_says_so(bundle_copy):
    other = {"priority": "low" if TRAIN[5]["expected"]["priority"] != "low" else "high", "reason": "other impact"}
    result, _ = audit(with_sets(bundle_copy, train=TRAIN + [renamed(TRAIN[5], "train-again", expected=other)]))
    assert "with a different answer" in result.evidence[0].note


def test_near_duplicates_over_the_share_fail(bundle_copy):
    def paraphrase(item, k):
        words = item["input"].split()
        words[3], words[4] = words[4], "changed"
        return renamed(item, f"train-near-{k}", input=" ".join(words))

    train = TRAIN + [paraphrase(TRAIN[k], k) for k in (1, 2)]
    result, _ = audit(with_sets(bundle_copy, train=train))
    assert result.details["failed"] == ["near_duplicates"]
    assert result.metric("near_duplicate_share").adapter == round(4 / 82, 6)  # two pairs, four rows
    pairs = {(p["id"], p["other_id"]) for p in result.details["near_duplicates"]["pairs"]}
    assert pairs == {("train-near-1", "train-0001"), ("train-near-2", "train-0002")}
    assert audit(bundle_copy, max_near_duplicate_share=0.05)[0].status == "passed"


def test_overlap_between_any_two_splits_fails(bundle_copy):
    validation = VALIDATION[:-1] + [renamed(TRAIN[7], "validation-from-train")]
    evaluation = EVAL[:-1] + [renamed(VALIDATION[2], "eval-from-validation")]
    result, _ = audit(with_sets(bundle_copy, validation=validation, eval=evaluation))
    assert result.details["failed"] == ["split_overlaps"]
    pairs = {(p["set"], p["id"], p["other_set"], p["other_id"]) for p in result.details["split_overlaps"]["pairs"]}
    assert pairs == {("validation", "validation-from-train", "train", "train-0007"),
                     ("eval", "eval-from-validation", "validation", "validation-0002")}


def test_a_missing_or_rare_label_fails(bundle_copy):
    no_low = [i for i in TRAIN if i["expected"]["priority"] != "low"]
    result, _ = audit(with_sets(bundle_copy, train=no_low))
    assert result.details["failed"] == ["label_balance"]
    assert result.metric("min_label_share").adapter == 0.0
    assert "'low' is 0.0% of 'train'" in result.summary
    rare = no_low + [i for i in TRAIN if i["expected"]["priority"] == "low"][:2]  # 2 of 62
    with_sets(bundle_copy, train=rare)
    result, _ = audit(bundle_copy)
    assert result.status == "failed" and result.details["label_balance"]["shares"]["train"]["low"] == round(2 / 62, 6)
    assert audit(bundle_copy, min_label_share=0.03)[0].status == "passed"


def test_contract_violations_are_counted_with_examples(bundle_copy):
    # loading refuses violations in train, validation and eval; an extra set is the audit's to catch
    extra = distinct_items("extra", 8, seed=24)
    extra[3]["expected"] = {"priority": extra[3]["expected"]["priority"], "reason": "no"}  # reason too short
    result, _ = audit(with_sets(bundle_copy, extra=extra), held_out=["validation", "eval", "extra"])
    assert result.details["failed"] == ["contract_violations"]
    assert result.details["contract_violations"] == {"train": 0, "validation": 0, "eval": 0, "extra": 1}
    assert result.evidence[0].id == "extra/extra-0003" and "breaks the contract" in result.evidence[0].note


def test_examples_longer_than_max_seq_len_fail(bundle_copy):
    long = renamed(TRAIN[0], "train-long", input=" ".join([TRAIN[0]["input"]] * 3))  # 60 words
    result, _ = audit(with_sets(bundle_copy, train=TRAIN[1:] + [long]), max_seq_len=60)
    assert result.details["failed"] == ["truncation"]
    assert result.metric("truncated_share").adapter == round(1 / 92, 6)
    assert result.details["truncation"]["sets"] == {"train": round(1 / 80, 6), "validation": 0.0}
    assert result.evidence[0].id == "train/train-long" and "> max_seq_len 60" in result.evidence[0].note


def test_without_a_max_seq_len_truncation_is_not_checked_and_nothing_is_asked(bundle_copy):
    bundle = load_bundle(with_sets(bundle_copy))
    bundle.manifest = bundle.manifest.model_copy(update={"recipe": None})
    bundle.recipe = None  # parsed while loading: the gate reads the parsed recipe
    runtime = FakeRuntime({})
    result, = run_gates(bundle, [(get_gate("dataset_audit").build({}), True)], runtime)
    assert result.status == "passed" and runtime.calls == []
    assert result.metric("truncated_share").adapter is None
    assert result.details["truncation"]["max_seq_len"] is None


def test_check_counts_tokens_with_the_tokenizer_and_never_loads_weights(bundle_copy, tmp_path):
    """A real check: max_seq_len from the bundle's recipe, tokens from the base tokenizer."""
    long = renamed(TRAIN[0], "train-long", input=" ".join([TRAIN[0]["input"]] * 12))  # 240 words
    prepared = prepare(with_sets(bundle_copy, train=TRAIN[1:] + [long]))
    verdict, _ = run_check(prepared, tmp_path)
    assert verdict.exit_code == 1 and prepared.runtime._model is None
    gate = verdict.gates[0]
    assert gate.details["failed"] == ["truncation"]
    assert gate.details["truncation"]["longest"] > 256
    assert [e.id for e in gate.evidence] == ["train/train-long"]


def test_clean_check_exits_0(bundle_copy, tmp_path):
    assert main(["check", str(with_sets(bundle_copy)), "--out", str(tmp_path), "-q"]) == 0


def test_the_result_is_deterministic(bundle_copy):
    train = TRAIN + [renamed(TRAIN[k], f"dup-{k}") for k in (3, 1, 2)]
    bundle = with_sets(bundle_copy, train=train)
    first, second = audit(bundle)[0], audit(bundle)[0]
    assert first.model_dump() == second.model_dump()
    assert [e.id for e in first.evidence] == ["train/dup-3", "train/dup-1", "train/dup-2"]


@pytest.mark.parametrize("params, message", [
    ({"min_label_share": 1.5}, "min_label_share must be within"),
    ({"held_out": ["train"]}, "held_out must not include the training set"),
    ({"max_seq_len": 0}, "max_seq_len must be >= 1"),
])
def test_bad_parameters_are_parameter_errors(params, message):
    from gatekeeper.errors import GateParameterError

    with pytest.raises(GateParameterError, match=message):
        get_gate("dataset_audit").build(params)


# -- declared provenance ------------------------------------------------------
CLEAN = {"source": "https://example.org/tickets", "licence": "cc-by-4.0", "customer_data": False}
RULES = {"allowed_licences": ["apache-2.0", "cc-by-4.0"], "customer_data": False, "require_declared": True}


def declare(bundle, **sets):
    """Set bundle.yaml's provenance (set name -> declaration) and sign again."""
    edit_manifest(bundle, lambda data: data.update(provenance=sets))
    return bundle


def test_the_declaration_is_reported_and_without_rules_changes_nothing(bundle_copy):
    result, _ = audit(declare(with_sets(bundle_copy), train=CLEAN, validation={"licence": "apache-2.0"}))
    assert result.status == "passed" and result.details["failed"] == []
    assert result.details["provenance"] == {"declared": {
        "eval": "undeclared", "train": CLEAN,
        "validation": {"source": "undeclared", "licence": "apache-2.0", "customer_data": "undeclared"}}}
    assert "provenance_breaches" not in {m.name for m in result.metrics}  # no rule set: no seventh check


@pytest.mark.parametrize("train, params, expected", [
    ({k: v for k, v in CLEAN.items() if k != "licence"}, {"allowed_licences": ["cc-by-4.0"]},
     "set 'train' declares no licence (rule allowed_licences: [cc-by-4.0])"),
    (CLEAN | {"licence": "gpl-3.0"}, {"allowed_licences": ["apache-2.0", "cc-by-4.0"]},
     "set 'train' has licence 'gpl-3.0' (rule allowed_licences: [apache-2.0, cc-by-4.0])"),
    (CLEAN | {"customer_data": True}, {"customer_data": False},
     "set 'train' declares customer data (rule customer_data: false)"),
    ({"licence": "cc-by-4.0"}, {"customer_data": False},
     "set 'train' does not declare customer_data (rule customer_data: false)"),
    ({"licence": "cc-by-4.0"}, {"require_declared": True},
     "set 'train' does not declare source, customer_data (rule require_declared: true)"),
])
def test_a_declaration_that_breaks_a_rule_fails_naming_the_set_and_the_rule(bundle_copy, train, params, expected):
    bundle = declare(with_sets(bundle_copy), train=train, validation=CLEAN)
    result, _ = audit(bundle, **params)
    assert result.status == "failed" and result.details["failed"] == ["provenance"]
    assert result.summary == expected
    assert result.metric("provenance_breaches").adapter == 1
    assert [b["set"] for b in result.details["provenance"]["breaches"]] == ["train"]
    assert audit(declare(bundle, train=CLEAN, validation=CLEAN), **params)[0].status == "passed"


def test_a_clean_declaration_passes_every_rule_and_eval_is_not_judged_by_default(bundle_copy):
    result, _ = audit(declare(with_sets(bundle_copy), train=CLEAN, validation=CLEAN | {"licence": "Apache-2.0"},
                              eval=CLEAN | {"customer_data": True}), **RULES)
    assert result.status == "passed", result.summary
    assert result.metric("provenance_breaches").adapter == 0
    assert result.details["provenance"]["judged"] == ["train", "validation"]
    assert "train, validation: licence in [apache-2.0, cc-by-4.0]" in result.rule
    # naming the sets brings eval under the rules
    result, _ = audit(bundle_copy, **RULES, provenance_sets=["train", "validation", "eval"])
    assert result.summary == "set 'eval' declares customer data (rule customer_data: false)"


def test_an_undeclared_validation_set_fails_the_licence_rule(bundle_copy):
    result, _ = audit(declare(with_sets(bundle_copy), train=CLEAN), allowed_licences=["cc-by-4.0"])
    assert result.summary == "set 'validation' declares no licence (rule allowed_licences: [cc-by-4.0])"


def test_the_rehearsal_pool_is_a_training_set(bundle_copy):
    bundle = declare(with_sets(bundle_copy, rehearsal=distinct_items("rehearsal", 4, seed=25)),
                     train=CLEAN, validation=CLEAN, rehearsal=CLEAN | {"licence": "proprietary"})
    result, _ = audit(bundle, allowed_licences=["cc-by-4.0"])
    assert result.details["provenance"]["judged"] == ["train", "validation", "rehearsal"]
    assert result.summary == "set 'rehearsal' has licence 'proprietary' (rule allowed_licences: [cc-by-4.0])"


def test_a_declaration_edited_without_signing_again_is_refused(bundle_copy, tmp_path, capsys):
    bundle = with_sets(bundle_copy)
    edit_manifest(bundle, lambda data: data.update(provenance={"train": CLEAN}), resign=False)
    assert main(["check", str(bundle), "--out", str(tmp_path / "r"), "-q"]) == 2
    assert "signature" in capsys.readouterr().err


def test_provenance_shows_in_the_verdict_and_the_report(bundle_copy, tmp_path):
    bundle = declare(with_sets(bundle_copy), train=CLEAN)
    assert main(["check", str(bundle), "--out", str(tmp_path), "-q"]) == 0
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["bundle"]["provenance"] == {"train": CLEAN}
    html = (tmp_path / "report.html").read_text()
    assert "source https://example.org/tickets; licence <code>cc-by-4.0</code>; customer data no" in html
    assert "<th>data validation</th><td>provenance undeclared</td>" in html


@pytest.mark.parametrize("params, message", [
    ({"allowed_licences": ["not a licence"]}, "field 'allowed_licences.0'"),
    ({"provenance_sets": []}, "field 'provenance_sets'"),
    ({"customer_data": "no"}, "parameter 'customer_data'"),
])
def test_bad_provenance_parameters_are_parameter_errors(params, message):
    from gatekeeper.errors import GateParameterError

    with pytest.raises(GateParameterError, match=message):
        get_gate("dataset_audit").build(params)


def test_a_provenance_set_the_bundle_lacks_is_bad_input(bundle_copy, tmp_path, capsys):
    bundle = with_sets(bundle_copy)
    edit_manifest(bundle, lambda data: data.update(gates=[{"name": "dataset_audit",
                                                           "params": {"customer_data": False,
                                                                      "provenance_sets": ["nope"]}}]))
    assert main(["check", str(bundle), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "golden set 'nope' is not in the bundle" in err
