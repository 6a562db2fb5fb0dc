"""`gatekeeper inspect`: what the trainer sees, shown before it trains, from the tokenizer alone."""

from __future__ import annotations

import html
import json
import re
import shutil
import statistics

import pytest
import yaml

from gatekeeper.bundle.goldens import load_jsonl
from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.cli import main
from gatekeeper.errors import RecipeError
from gatekeeper.runtime.hf import modeling
from gatekeeper.training.data import collate, encode
from gatekeeper.training.inspect import CUT, fmt_count, inspect_path, pieces
from tests.conftest import CONTRACT, LABELS, PROMPT_USER, replace_golden_sets, tiny_items, write_jsonl, write_recipe

EXAMPLE = re.compile(r"^example \d+ of \d+: (\S+) ─+\n[^\n]*\n(.*?)(?=^example \d+ of \d+: |^note: |^lengths in tokens)",
                     re.DOTALL | re.MULTILINE)


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")  # the length table on one line per row, whatever runs the tests


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if any model's weights are loaded: gatekeeper's own loader counts, transformers' raises."""
    from transformers import PreTrainedModel

    def refuse(cls, *args, **kwargs):
        raise AssertionError(f"inspect loaded a model ({cls.__name__})")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    before = modeling.MODELS_LOADED
    yield
    assert modeling.MODELS_LOADED == before, "inspect loaded a model"


def varied_items(prefix: str, count: int, offset: int = 0) -> list[dict]:
    """Tiny tickets of uneven length and uneven labels, so medians, p95 and per-label rows differ."""
    items = tiny_items(prefix, count, offset)
    for k, item in enumerate(items):
        item["input"] += " and again" * (k * 5 % 11)
        if k % 3 == 0:
            item["expected"]["priority"] = "low"
    return items


@pytest.fixture
def task(tmp_path):
    root = tmp_path / "task"
    write_jsonl(root / "train.jsonl", varied_items("train", 40))
    write_jsonl(root / "validation.jsonl", varied_items("validation", 9, offset=100))
    write_jsonl(root / "eval.jsonl", varied_items("eval", 12, offset=200))
    shutil.copyfile(CONTRACT, root / "contract.schema.json")
    return root


def _tokenizer(tiny_base):
    from gatekeeper.runtime.prompts import load_tokenizer

    return load_tokenizer(tiny_base)


def _direct_lengths(tokenizer, items: list[dict]) -> list[tuple[int, int]]:
    """(prompt, answer) token counts computed here from the tokenizer and the chat template, not by gatekeeper."""
    counts = []
    for item in items:
        messages = [{"role": "user", "content": PROMPT_USER.replace("{input}", item["input"])}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        answer = json.dumps(item["expected"], ensure_ascii=False) + tokenizer.eos_token
        counts.append((len(tokenizer(prompt, add_special_tokens=False)["input_ids"]),
                       len(tokenizer(answer, add_special_tokens=False)["input_ids"])))
    return counts


def _spread(values: list[int]) -> tuple:
    """min, median, p95 (the smallest value that at least 95% of the values do not exceed), max."""
    p95 = min(v for v in values if sum(x <= v for x in values) >= 0.95 * len(values))
    return min(values), statistics.median(values), p95, max(values)


def _shown(spread: tuple) -> str:
    low, median, p95, high = spread
    return f"{low} / {median:.0f} / {p95} / {high}" if float(median).is_integer() else f"{low} / {median:.1f} / {p95} / {high}"


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _inspect(capsys, *argv) -> tuple[int, str, list[str]]:
    code = main(["inspect", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def test_the_marked_tokens_are_exactly_those_collate_labels(tmp_path, tiny_base, task, capsys, no_model):
    recipe_path = write_recipe(tmp_path / "r", tiny_base, task)
    code, out, err = _inspect(capsys, recipe_path, "--examples", 2)
    assert code == 0 and not err, err
    blocks = dict(EXAMPLE.findall(out))
    train = _read(task / "train.jsonl")
    assert list(blocks) == [train[0]["id"], train[1]["id"]]  # the first examples of the training split

    tokenizer = _tokenizer(tiny_base)
    recipe, root = load_recipe(recipe_path)
    for item, encoded in zip(train, encode(load_jsonl(task / "train.jsonl")[:2], tokenizer, recipe.data.prompt)):
        ids, _, labels = collate([encoded], tokenizer.pad_token_id)
        loss_ids = [int(i) for i, label in zip(ids[0], labels[0]) if label != -100]
        block = blocks[item["id"]]
        marked = [piece.replace("↵\n", "\n") for piece in re.findall(r"⟦(.*?)⟧", block, re.DOTALL)]
        # token by token: the bracketed tokens are collate's labelled ones, no more, no fewer, none shifted
        assert marked == [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in loss_ids]
        assert "".join(marked) == json.dumps(item["expected"]) + tokenizer.eos_token
        # the rest is the prompt as the chat template renders it with the recipe's user message
        messages = [{"role": "user", "content": PROMPT_USER.replace("{input}", item["input"])}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        unmarked = re.sub(r"⟦.*?⟧", "", block.removesuffix("\n"), flags=re.DOTALL)
        assert unmarked.replace("│", "").replace("↵\n", "\n") == prompt
        summary = out.split(f"{item['id']} ─")[1].splitlines()[1]
        assert f"{len(ids[0])} tokens = {len(ids[0]) - len(loss_ids)} prompt + {len(loss_ids)} answer" in summary

    # the same in the data the page is drawn from
    inspection = inspect_path(recipe_path, examples=1)
    tokens = inspection.examples[0].tokens
    encoded = encode(load_jsonl(task / "train.jsonl")[:1], tokenizer, recipe.data.prompt)[0]
    ids, _, labels = collate([encoded], tokenizer.pad_token_id)
    assert [t.id for t in tokens] == ids[0].tolist()
    assert [t.loss for t in tokens] == (labels[0] != -100).tolist()


def test_length_statistics_match_a_direct_count(tmp_path, tiny_base, task, capsys, no_model):
    recipe_path = write_recipe(tmp_path / "r", tiny_base, task)
    code, out, err = _inspect(capsys, recipe_path, "--examples", 0)
    assert code == 0 and not err
    assert not EXAMPLE.findall(out)
    rows = {(r.split, r.label): r for r in inspect_path(recipe_path, examples=0).lengths}
    tokenizer = _tokenizer(tiny_base)
    table = [line for line in out.splitlines() if line.startswith("│")]
    checked = 0
    for split in ("train", "validation", "eval"):
        items = _read(task / f"{split}.jsonl")
        groups = {None: items} | {label: [i for i in items if i["expected"]["priority"] == label] for label in LABELS}
        assert {label for (s, label) in rows if s == split} == set(groups)
        for label, group in groups.items():
            counts = _direct_lengths(tokenizer, group)
            total, prompt, answer = ([p + a for p, a in counts], [p for p, _ in counts], [a for _, a in counts])
            row = rows[split, label]
            assert row.count == len(group)
            for got, values in ((row.total, total), (row.prompt, prompt), (row.answer, answer)):
                assert (got.min, got.median, got.p95, got.max) == _spread(values)
            # and in the terminal: one table row per split and label, with the same numbers
            cells = [f" {len(group)} ", f" {_shown(_spread(total))} ", f" {_shown(_spread(prompt))} ",
                     f" {_shown(_spread(answer))} ", f" {label or 'all'} "]
            assert sum(all(cell in line for cell in cells) for line in table) == 1, (split, label, cells)
            checked += 1
    assert checked == 15
    medians = {rows["train", label].total.median for label in LABELS}
    assert len(medians) > 1, "the per-label rows should differ on this data"
    assert "every train and validation example fits max_seq_len 256" in out


def test_examples_over_max_seq_len_are_listed_by_id_and_training_would_refuse_them(tmp_path, tiny_base, task, capsys,
                                                                                   no_model):
    tokenizer = _tokenizer(tiny_base)
    train, validation = _read(task / "train.jsonl"), _read(task / "validation.jsonl")
    lengths = {i["id"]: p + a for i, (p, a) in zip(train + validation, _direct_lengths(tokenizer, train + validation))}
    limit = sorted(lengths.values())[-6]  # a few over, many under
    over = {key: n for key, n in lengths.items() if n > limit}
    assert 2 <= len(over) < len(lengths) // 2 and train[0]["id"] not in over
    recipe_path = write_recipe(tmp_path / "r", tiny_base, task, training={"max_steps": 1, "max_seq_len": limit})

    code, out, err = _inspect(capsys, recipe_path, "--examples", 1)
    assert code == 1 and not err  # shown, not refused; exit 1 as training would refuse it
    assert f"{len(over)} train/validation example(s) exceed max_seq_len {limit}: training would refuse them" in out
    listed = {m[2]: int(m[3]) for m in re.finditer(r"│ (train|validation) +│ (\S+) +│ \d+ +│ (\d+) +│ \d+ +│", out)}
    assert listed == over
    assert f"at least {max(lengths.values())}" in out
    # the longest over-long training example is shown too, cut where max_seq_len cuts it
    inspection = inspect_path(recipe_path, examples=1)
    longest = max((key for key in over if key.startswith("train")), key=lambda key: over[key])
    assert [view.id for view in inspection.examples] == [train[0]["id"], longest]
    shown = list(pieces(inspection.examples[1]))
    marker = next(k for k, piece in enumerate(shown) if piece.kind == "cut")
    assert sum(piece.kind in ("token", "loss") for piece in shown[:marker]) == limit
    assert all(piece.cut for piece in shown[marker + 1:]) and not any(piece.cut for piece in shown[:marker])
    assert f"{CUT} max_seq_len {limit}: the rest is cut {CUT}" in dict(EXAMPLE.findall(out))[longest]

    # training refuses the very same data (before any model loads)
    from gatekeeper.training.loop import train as run_training

    with pytest.raises(RecipeError, match=rf"exceed max_seq_len={limit}"):
        run_training(*load_recipe(recipe_path))


def test_html_writes_the_same_page(tmp_path, tiny_base, task, capsys, no_model):
    train = _read(task / "train.jsonl")
    recipe_path = write_recipe(tmp_path / "r", tiny_base, task, training={"max_steps": 1, "max_seq_len": 40})
    page = tmp_path / "out" / "inspect.html"
    code, out, err = _inspect(capsys, recipe_path, "--html", page)
    assert code == 1 and not err
    assert out.splitlines()[-1] == f"html: {page}"
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and not re.search(r'\b(src|href)="(?!#)', text)  # self-contained
    inspection = inspect_path(recipe_path)
    terminal = dict(EXAMPLE.findall(out))
    for view in inspection.examples:
        assert f'id="example-{view.id}"' in text
        start = text.index(f'id="example-{view.id}"')
        section = text[start:text.index("</pre>", start)]
        loss = [html.unescape(t) for t in re.findall(r'<span class="loss[^"]*"[^>]*>(.*?)</span>', section, re.DOTALL)]
        assert loss == re.findall(r"⟦.*?⟧", terminal[view.id], re.DOTALL)  # the same tokens marked as in the terminal
        assert len(loss) == sum(t.loss for t in view.tokens)
    for row in inspection.lengths:  # the numbers themselves are checked against a direct count above
        for spread in (row.total, row.prompt, row.answer):
            assert f"{spread.min} / {fmt_count(spread.median)} / {spread.p95} / {spread.max}" in text
    assert inspection.over_long and all(f"<code>{entry.id}</code>" in text for entry in inspection.over_long)
    assert train[0]["id"] in text and "training would refuse them" in text
    assert not [p for p in page.parent.iterdir() if p.name.startswith(".")]  # the staging file is gone


def test_field_weights_are_shown_on_the_tokens_training_weighs(tmp_path, tiny_base, task, capsys, no_model):
    recipe_path = write_recipe(tmp_path / "r", tiny_base, task, training={"field_weights": {"priority": 4}})
    code, out, err = _inspect(capsys, recipe_path, "--examples", 1)
    assert code == 0 and not err, err
    recipe, _ = load_recipe(recipe_path)
    item = load_jsonl(task / "train.jsonl")[0]
    trained = encode([item], _tokenizer(tiny_base), recipe.data.prompt, recipe.training.field_weights)[0]
    view = inspect_path(recipe_path, examples=1).examples[0]
    loss = [t for t in view.tokens if t.loss]
    assert [t.weight for t in loss] == list(trained.answer_weights)  # the trainer's own weights, token by token
    weighed = [t.text for t in loss if t.weight == 4]
    assert weighed and item.expected["priority"] in "".join(weighed)
    assert all(t.weight == 1 for t in view.tokens if not t.loss)
    block = dict(EXAMPLE.findall(out))[item.id]
    assert re.findall(r"⟦([^⟧]*)⟧×4", block) == weighed and block.count("×") == len(weighed)
    assert "training.field_weights: priority ×4; the train split only" in out
    page = tmp_path / "inspect.html"
    assert _inspect(capsys, recipe_path, "--examples", 1, "--html", page)[0] == 0
    spans = [html.unescape(t) for t in re.findall(r'<span class="loss[^"]*"[^>]*>(.*?)</span>', page.read_text(), re.DOTALL)]
    assert [t.removeprefix("⟦").removesuffix("⟧×4") for t in spans if t.endswith("×4")] == weighed
    assert "training.field_weights: priority ×4; the train split only" in page.read_text()


def _bad(tmp_path, tiny_base, task, case):
    items = tiny_items("train", 6)
    recipe = write_recipe(tmp_path / "r", tiny_base, task)
    if case == "unknown key":
        return write_recipe(tmp_path / "r", tiny_base, task, training={"learning_rte": 0.1}), "unknown key 'training.learning_rte'"
    if case == "missing file":
        recipe.write_text(recipe.read_text().replace(str(task / "train.jsonl"), str(tmp_path / "gone.jsonl")))
        return recipe, "gone.jsonl: file not found"
    if case == "contract":
        items[3]["expected"]["priority"] = "urgent"
        expect = "bad.jsonl:4: expected answer breaks the contract"
    elif case == "duplicate":
        items[5]["input"] = items[1]["input"].upper()
        expect = "bad.jsonl:6: duplicate input (same as line 2)"
    elif case == "field weights":
        return (write_recipe(tmp_path / "r", tiny_base, task, training={"field_weights": {"urgency": 2}}),
                "training.field_weights names 'urgency', which no answer in")
    elif case == "rehearsal":
        data = yaml.safe_load(recipe.read_text())
        data["data"]["rehearsal"] = {"prompts": str(tmp_path / "no-pool.jsonl")}
        recipe.write_text(yaml.safe_dump(data))
        return recipe, "no-pool.jsonl: file not found"
    bad = write_jsonl(tmp_path / "bad.jsonl", items)
    recipe.write_text(recipe.read_text().replace(str(task / "train.jsonl"), str(bad)))
    return recipe, expect


@pytest.mark.parametrize("case", ["unknown key", "missing file", "contract", "duplicate", "field weights", "rehearsal"])
def test_what_training_refuses_is_one_line_and_exit_2_with_nothing_written(tmp_path, tiny_base, task, capsys,
                                                                            no_model, case):
    recipe, expect = _bad(tmp_path, tiny_base, task, case)
    page = tmp_path / "out" / "inspect.html"
    code, out, err = _inspect(capsys, recipe, "--html", page)
    assert code == 2 and out == "", out
    assert len(err) == 1 and err[0].startswith("gatekeeper: error: ") and expect in err[0], err
    assert not page.parent.exists()


def test_bad_arguments_are_one_line(tmp_path, capsys, tiny_base, task):
    assert _inspect(capsys, tmp_path / "nowhere.yaml")[0] == 2
    code, out, err = _inspect(capsys, write_recipe(tmp_path / "r", tiny_base, task), "--examples", -1)
    assert code == 2 and out == "" and len(err) == 1 and "--examples" in err[0]
    (tmp_path / "empty").mkdir()
    code, _, err = _inspect(capsys, tmp_path / "empty")
    assert code == 2 and len(err) == 1 and "neither a bundle" in err[0]


def test_a_bundle_is_inspected_from_its_own_files(bundle_copy, tiny_base, capsys, no_model):
    manifest = yaml.safe_load((bundle_copy / "bundle.yaml").read_text())
    planted = varied_items("bundled", 10)
    replace_golden_sets(bundle_copy, manifest["gates"], train=planted)
    code, out, err = _inspect(capsys, bundle_copy, "--examples", 2)
    assert code == 0 and not err, err
    assert list(dict(EXAMPLE.findall(out))) == ["bundled-0000", "bundled-0001"]  # the bundle's train split
    assert "max_seq_len 256 (from the bundled recipe)" in out
    inspection = inspect_path(bundle_copy / "bundle.yaml")
    rows = {(r.split, r.label): r for r in inspection.lengths}
    counts = _direct_lengths(_tokenizer(tiny_base), planted)
    assert rows["train", None].count == 10
    assert (rows["train", None].total.min, rows["train", None].total.max) == (min(map(sum, counts)), max(map(sum, counts)))
    assert rows["eval", None].count == len(_read(bundle_copy / manifest["golden_sets"]["eval"]["path"]))

    planted[4]["input"] = planted[0]["input"]  # what training refuses in a recipe's data it refuses in a bundle's
    replace_golden_sets(bundle_copy, manifest["gates"], train=planted)
    code, out, err = _inspect(capsys, bundle_copy)
    assert code == 2 and out == "" and len(err) == 1 and "duplicate input (same as line 1)" in err[0]
