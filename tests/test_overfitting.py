"""overfitting: the loss curves of the training record, and accuracy on sources training never saw.

On records written by hand for the logic (a run whose validation loss rises
while its training loss falls fails; a clean run passes) and on a fake runtime
for the held-out sources. Then on the real tiny model: many steps on eight rows
of random words fails, a short run passes, and an adopted adapter, which has no
training record, is skipped.
"""

import json
from dataclasses import replace

import pytest

from gatekeeper.bundle.goldens import GoldenItem, load_jsonl
from gatekeeper.gating.engine import run_gates
from gatekeeper.report.render import render_html, render_json
from gatekeeper.testing import FakeRuntime
from gatekeeper.verdict.diff import diff_verdicts
from tests.conftest import CONTRACT, PROMPT_USER, distinct_items, edit_manifest, fake_bundle, write_jsonl, write_recipe
from tests.fakes import ITEMS, build, chatty, fake_verdict, perfect


def curve(values: list[float], every: int = 10) -> list[list[float]]:
    return [[k * every, v] for k, v in enumerate(values)]


def linear(start: float, end: float, steps: int) -> list[list[float]]:
    """A training loss per step 1..steps, straight from start to end."""
    return [[s, round(start + (end - start) * (s - 1) / (steps - 1), 6)] for s in range(1, steps + 1)]


# validation falls to its lowest at step 20, then climbs back while training keeps falling
OVERFIT = {"best_step": 20, "val_curve": curve([2.0, 1.0, 0.8, 1.0, 1.3, 1.6]), "train_curve": linear(2.0, 0.05, 50)}
# both fall together, validation a little above training
CLEAN = {"best_step": 50, "val_curve": curve([2.0, 1.2, 0.9, 0.8, 0.75, 0.72]), "train_curve": linear(1.9, 0.6, 50)}


def with_sources(items: list[dict], sources) -> list[GoldenItem]:
    return [GoldenItem(i["id"], i["input"], i["expected"], n, {"source": s})
            for n, (i, s) in enumerate(zip(items, sources), 1)]


def bundle_with(record, eval_items=None, train_items=None):
    bundle = replace(fake_bundle({"eval": ITEMS}), training_record=record)
    golden = dict(bundle.golden)
    if eval_items is not None:
        golden["eval"] = eval_items
    if train_items is not None:
        golden["train"] = train_items
    return replace(bundle, golden=golden)


def run(bundle, adapter=perfect, base=chatty, **params):
    runtime = FakeRuntime({"base": base, "adapter": adapter})
    result, = run_gates(bundle, build(("overfitting", params, True)), runtime)
    return result, runtime


def test_the_gap_and_the_trend_are_read_as_documented():
    from gatekeeper.builtin_gates.overfitting import read_losses

    losses = read_losses(OVERFIT)
    # training losses of steps 11..20 (the last 10 since the evaluation at step 10): 2.0 - 1.95 * (s-1)/49
    train_at_20 = sum(2.0 - 1.95 * (s - 1) / 49 for s in range(11, 21)) / 10
    assert losses.selected_step == 20 and losses.val_selected == 0.8
    assert losses.train_selected == pytest.approx(train_at_20, abs=1e-5)
    assert losses.gap == pytest.approx(0.8 - train_at_20, abs=1e-5)
    # from the lowest (0.8 at step 20) to the last (1.6 at step 50): +100%; training fell 1.95/49 per step over 30
    assert losses.window == (20, 50)
    assert losses.val_rise == pytest.approx(1.0) and losses.val_rise_abs == pytest.approx(0.8)
    assert losses.train_change == pytest.approx(-1.95 / 49 * 30, abs=1e-4)
    assert losses.rising_while_falling(0.10) and not losses.rising_while_falling(1.5)
    # only the last 2 evaluations looked at: 1.3 -> 1.6 is +23%
    assert read_losses(OVERFIT, trend_window=2).val_rise == pytest.approx(0.3 / 1.3)
    clean = read_losses(CLEAN)
    assert clean.val_rise == 0 and clean.window == (50, 50) and clean.train_change is None
    assert clean.gap == pytest.approx(0.72 - sum(1.9 - 1.3 * (s - 1) / 49 for s in range(41, 51)) / 10, abs=1e-5)


def test_validation_rising_while_training_falls_fails():
    result, runtime = run(bundle_with(OVERFIT))
    assert result.status == "failed", result.summary
    assert result.details["checks"]["trend"] == "failed" and result.details["checks"]["gap"] == "passed"
    assert "validation loss +100% from its lowest (step 20) to step 50, training loss fell" in result.summary
    assert result.metric("val_rise").adapter == pytest.approx(1.0) and result.metric("val_rise").threshold == 0.10
    assert "not measured" in result.details["checks"]["held_out_sources"]
    assert runtime.calls == []  # the record alone: no model asked
    # the figure holds the curves, the selected step and the span the trend was judged on
    figure, = result.figures
    assert figure.kind == "loss_curves" and figure.data["selected_step"] == 20 and figure.data["window"] == [20, 50]
    assert figure.data["val_curve"] == OVERFIT["val_curve"] and len(figure.data["train_curve"]) == 50


def test_a_clean_record_passes():
    result, _ = run(bundle_with(CLEAN))
    assert result.status == "passed", result.summary
    assert result.details["checks"] == {"gap": "passed", "trend": "passed",
                                        "held_out_sources": "not measured: no 'eval' item carries a 'source' or 'group' field"}


def test_each_bound_is_a_parameter():
    # a rise within max_val_rise is noise, not a trend
    wobble = dict(CLEAN, val_curve=curve([2.0, 1.2, 0.9, 0.8, 0.75, 0.78]))
    assert run(bundle_with(wobble))[0].status == "passed"  # +4%
    assert run(bundle_with(wobble), max_val_rise=0.02)[0].status == "failed"
    # validation rising with training rising too is divergence, not overfitting
    diverging = dict(OVERFIT, train_curve=linear(0.5, 2.0, 50))
    assert run(bundle_with(diverging))[0].details["checks"]["trend"] == "passed"
    # the last checkpoint kept: its gap is what is judged
    last = dict(OVERFIT, best_step=50)
    result, _ = run(bundle_with(last), max_val_rise=None)
    assert result.status == "failed" and result.details["checks"] == {
        "gap": "failed", "trend": "reported (no bound set)",
        "held_out_sources": "not measured: no 'eval' item carries a 'source' or 'group' field"}
    train_at_50 = sum(2.0 - 1.95 * (s - 1) / 49 for s in range(41, 51)) / 10
    assert result.metric("val_train_gap").adapter == pytest.approx(1.6 - train_at_50, abs=1e-5)
    assert run(bundle_with(last), max_val_rise=None, max_gap=2.0)[0].status == "passed"


def test_no_training_record_is_skipped_and_nothing_is_asked():
    result, runtime = run(bundle_with(None))
    assert result.status == "skipped" and "no training record" in result.skip_reason
    assert "gatekeeper init" in result.skip_reason and runtime.calls == []


# -- held-out sources ---------------------------------------------------------------------------

EVAL = ITEMS[:40]
SOURCES = ["forum", "email", "chat", "phone"]  # phone is never in training
TRAIN = with_sources(distinct_items("train", 30, seed=5), ["forum", "email", "chat"] * 10)
TAGGED = with_sources(EVAL, [SOURCES[k % 4] for k in range(len(EVAL))])
HELD_OUT = {i.input for i in TAGGED if i.extra["source"] == "phone"}


def test_an_adapter_that_fails_on_sources_training_never_saw_fails():
    memorised = lambda text: chatty(text) if text in HELD_OUT else perfect(text)  # noqa: E731
    result, runtime = run(bundle_with(CLEAN, TAGGED, TRAIN), adapter=memorised)
    assert result.status == "failed", result.summary
    assert result.details["checks"]["held_out_sources"] == "failed"
    drop = result.metric("heldout_source_drop")
    assert (drop.adapter, drop.base, drop.threshold) == (1.0, 0.0, 0.10)  # the base is wrong everywhere: no drop
    assert result.metric("seen_source_accuracy").adapter == 1.0 and result.metric("heldout_source_accuracy").adapter == 0.0
    sources = result.details["sources"]
    assert sources["items"] == {"seen": 30, "held_out": 10} and sources["field"] == "source"
    assert sources["per_source"]["phone"] == {"seen_in_training": False, "n": 10, "base": 0.0, "adapter": 0.0}
    assert sources["per_source"]["forum"]["seen_in_training"] and sources["adapter_drop_interval"] == [1.0, 1.0]
    assert "held-out sources 0.0% against seen 100.0% (-100.0 points)" in result.summary
    # the worst examples are the held-out items it got wrong, with both sides' answers
    assert len(result.evidence) == 8 and all(e.input in HELD_OUT and e.adapter_ok is False for e in result.evidence)
    assert result.evidence[0].note.startswith("source 'phone' (held out)")
    # the adapter's greedy answers are asked, the request task_accuracy asks too
    assert sorted(runtime.calls) == [("adapter", 40), ("base", 40)]


def test_an_adapter_as_good_on_held_out_sources_passes():
    result, _ = run(bundle_with(CLEAN, TAGGED, TRAIN))
    assert result.status == "passed", result.summary
    assert result.metric("heldout_source_drop").adapter == 0.0
    # loglik scoring reads the label from the closed set instead: the same verdict, no generation
    scored, runtime = run(bundle_with(CLEAN, TAGGED, TRAIN), scoring="loglik")
    assert scored.status == "passed" and scored.details["sources"]["scoring"] == "loglik"


def test_a_group_field_serves_when_there_is_no_source_and_unmeasurable_splits_are_said():
    grouped = [replace(i, extra={"group": i.extra["source"]}) for i in TAGGED]
    train = [replace(i, extra={"group": i.extra["source"]}) for i in TRAIN]
    memorised = lambda text: chatty(text) if text in HELD_OUT else perfect(text)  # noqa: E731
    result, _ = run(bundle_with(CLEAN, grouped, train), adapter=memorised)
    assert result.status == "failed" and result.details["sources"]["field"] == "group"
    # every evaluation source seen in training: nothing held out, nothing judged
    seen_all = with_sources(distinct_items("train", 4, seed=5), SOURCES)
    result, runtime = run(bundle_with(CLEAN, TAGGED, seen_all), adapter=memorised)
    assert result.status == "passed" and runtime.calls == []
    assert "none is held out" in result.details["checks"]["held_out_sources"]
    # no train set in the bundle: which sources training saw is unknown
    result, _ = run(bundle_with(CLEAN, TAGGED))
    assert "no 'train' set" in result.details["checks"]["held_out_sources"]


def test_golden_items_keep_their_other_fields(tmp_path):
    path = write_jsonl(tmp_path / "eval.jsonl", [{"id": "a", "input": "x", "expected": 1, "source": "forum"},
                                                 {"id": "b", "input": "y", "expected": None}])
    first, second = load_jsonl(path)
    assert first.extra == {"source": "forum"} and second.extra == {}
    assert hash(second) == hash(GoldenItem("b", "y", None, 2))  # extras stay out of the hash


def test_the_report_draws_the_curves_with_the_selected_step_and_diff_compares_the_metrics():
    overfit, _ = run(bundle_with(OVERFIT))
    clean, _ = run(bundle_with(CLEAN))

    def verdict(result):
        v = fake_verdict(perfect)
        return v.model_copy(update={"gates": v.gates + [result]})

    lines = render_html(verdict(overfit)).splitlines()
    drawn = [line for line in lines if line.startswith("<figure>") and '<svg class="curve"' in line]
    assert len(drawn) == 1 and drawn[0].endswith("</figure>")
    assert '<line class="selected"' in drawn[0] and "selected step 20" in drawn[0]
    assert '<rect class="window"' in drawn[0] and "trend judged over steps 20-50" in drawn[0]
    assert any(line.startswith('<tr><td>val_rise (last over lowest') for line in lines)
    assert '"kind": "loss_curves"' in render_json(verdict(overfit))
    change = next(g for g in diff_verdicts(verdict(clean), verdict(overfit)).gates if g.gate == "overfitting")
    by_name = {m.metric: m for m in change.metrics}
    assert by_name["val_rise"].direction == "worse" and by_name["val_rise"].change == pytest.approx(1.0)
    assert by_name["val_loss_selected"].direction == "worse"  # 0.72 -> 0.8, lower is better


# -- on the real tiny model ---------------------------------------------------------------------


def _check(bundle, out):
    from gatekeeper.cli import main

    code = main(["check", str(bundle), "--out", str(out), "-q"])
    return code, {g["name"]: g for g in json.loads((out / "verdict.json").read_text())["gates"]}


def test_many_steps_on_a_tiny_training_set_fail_on_the_real_tiny_model(tiny_base, tmp_path, one_thread):
    """Eight rows of random words, trained 150 steps: the rows are learnt by heart (training loss near 0)
    while validation loss, lowest early, climbs. The output head is trained too: without it the tiny
    random model's logits stay too small for any loss to approach 0."""
    import shutil

    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.training.loop import train
    from gatekeeper.training.versions import write_candidate

    task = tmp_path / "task"
    write_jsonl(task / "train.jsonl", distinct_items("train", 8, seed=1, words=8))
    write_jsonl(task / "validation.jsonl", distinct_items("validation", 8, seed=2, words=8))
    write_jsonl(task / "eval.jsonl", distinct_items("eval", 8, seed=3, words=8))
    shutil.copyfile(CONTRACT, task / "contract.schema.json")
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
    recipe_path = write_recipe(tmp_path / "recipe", tiny_base, task,
                               adapter={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": modules},
                               training={"batch_size": 8, "max_steps": 150, "eval_every": 30, "learning_rate": 0.01,
                                         "warmup_steps": 1},
                               gates=[{"name": "overfitting"}])
    recipe, root = load_recipe(recipe_path)
    bundle = write_candidate(train(recipe, root), recipe, root)
    code, gates = _check(bundle, tmp_path / "r")
    result = gates["overfitting"]
    assert result["status"] == "failed", result["summary"]
    assert code == 1 and result["details"]["checks"]["trend"] == "failed"
    rise = next(m for m in result["metrics"] if m["name"] == "val_rise")
    assert rise["adapter"] > 0.5
    assert '<svg class="curve"' in (tmp_path / "r" / "report.html").read_text()


def test_a_short_run_passes_on_the_real_tiny_model(bundle_copy, tmp_path, one_thread):
    edit_manifest(bundle_copy, lambda d: d.update(gates=[{"name": "overfitting"}]))
    code, gates = _check(bundle_copy, tmp_path / "r")
    result = gates["overfitting"]
    assert result["status"] == "passed", result["summary"]
    assert code == 0 and result["details"]["checks"]["gap"] == "passed"
    assert result["details"]["checks"]["trend"] == "passed"


def test_an_adopted_adapter_has_no_training_record_and_is_skipped(bundle_copy, tiny_base, tiny_task, tmp_path):
    from gatekeeper.bundle.adopt import adopt_adapter
    from gatekeeper.bundle.manifest import PromptTemplate

    adopted = adopt_adapter(bundle_copy / "adapter", base=str(tiny_base), name="tiny-adopted",
                            golden={"eval": tiny_task / "eval.jsonl", "train": tiny_task / "train.jsonl"},
                            contract=tiny_task / "contract.schema.json", prompt=PromptTemplate(user=PROMPT_USER),
                            out=tmp_path / "adopted" / "tiny-adopted" / "v1")
    edit_manifest(adopted.path, lambda d: d.update(gates=[{"name": "overfitting"}]))
    code, gates = _check(adopted.path, tmp_path / "r")
    assert gates["overfitting"]["status"] == "skipped" and "no training record" in gates["overfitting"]["skip_reason"]
    assert code == 1  # its one required gate was skipped: nothing was checked
