"""The fast greedy decoder against transformers' own ``generate``, one prompt at a time.

The fast path shares prompt prefixes, drops finished rows, lets waiting rows
join a running batch and pads in the middle of a row; none of that may change
a single greedy token.
"""

from collections import Counter

import pytest

from gatekeeper.bundle.manifest import messages_for
from gatekeeper.runtime.hf.decoding import common_prefix_length, greedy
from gatekeeper.runtime.prompts import render

TEMPLATE = 'Classify this ticket as JSON with "priority" and "reason".\nTicket:\n{}'
TICKETS = ["the outage in area 3", "typo", "slow dashboards for every customer in the EU region", "broken", "x" * 40, "ok"]


@pytest.fixture(scope="module")
def model_and_rows(tiny_base):
    """The tiny architecture with large random weights: its greedy text varies from step to step.

    (At the usual initialisation a tiny model repeats one token forever, and
    every decoder agrees on that.)
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from gatekeeper.runtime.prompts import load_tokenizer

    tokenizer = load_tokenizer(tiny_base)
    config = AutoConfig.from_pretrained(tiny_base)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    texts = [render(tokenizer, messages_for(TEMPLATE.format(t))) for t in TICKETS]
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return model, tokenizer, rows


def stock_generate(model, row, max_new_tokens, stop_id, pad_id):
    """The tutorial way: one prompt, ``generate``, the stop token cut off."""
    import torch

    with torch.inference_mode():
        out = model.generate(
            torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long), do_sample=False,
            max_new_tokens=max_new_tokens, eos_token_id=stop_id, pad_token_id=pad_id,
        )[0, len(row):].tolist()
    return out[: out.index(stop_id)] if stop_id is not None and stop_id in out else out


def test_common_prefix_leaves_every_row_a_token_of_its_own():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[7, 1], [8, 1]]) == 0


def test_prompts_share_their_template_prefix(model_and_rows):
    _, _, rows = model_and_rows
    shared = common_prefix_length(rows)
    assert shared > len(rows[0]) // 2  # the saving the decoder exists for


def test_fast_greedy_equals_stock_generate(model_and_rows):
    model, tokenizer, rows = model_and_rows
    stop, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    expected = [stock_generate(model, r, 12, stop, pad) for r in rows]
    assert greedy(model, rows, 12, {stop}, pad, margin=None) == expected


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(model_and_rows):
    """Stop on a token the model emits at different steps in different rows, so rows leave mid-batch."""
    model, tokenizer, rows = model_and_rows
    pad = tokenizer.pad_token_id
    free = [stock_generate(model, r, 16, None, pad) for r in rows]
    firsts = Counter(token for out in free for token in set(out))
    # a token present in several rows but not all at the same step
    stop = next(t for t, n in firsts.most_common() if 1 < n and len({o.index(t) for o in free if t in o}) > 1)
    expected = [stock_generate(model, r, 16, stop, pad) for r in rows]
    assert len({len(e) for e in expected}) > 1, "the planted stop token must end rows at different steps"
    assert greedy(model, rows, 16, {stop}, pad, margin=None) == expected


@pytest.mark.parametrize(("batch_size", "prefill_rows"), [(1, 16), (2, 16), (4, 16), (4, 3), (None, 3)])
def test_waiting_rows_join_a_running_batch_without_changing_any_answer(model_and_rows, monkeypatch, batch_size,
                                                                       prefill_rows):
    """Rows of two templates, more than fit in the batch: as rows stop, the next ones are
    prefilled and join the batch, right-aligned in a cache rebuilt around them. With
    groups of three, several groups are prefilled into one cache, at the start and later."""
    import gatekeeper.runtime.hf.decoding as decoding

    monkeypatch.setattr(decoding, "PREFILL_ROWS", prefill_rows)
    model, tokenizer, rows = model_and_rows
    pad = tokenizer.pad_token_id
    other = [tokenizer(render(tokenizer, messages_for(t)), add_special_tokens=False)["input_ids"]
             for t in ("What is two plus two?", "Name a colour.")]
    mixed = rows + other
    free = [stock_generate(model, r, 10, None, pad) for r in mixed]
    stop = Counter(t for out in free for t in set(out[1:])).most_common(1)[0][0]
    expected = [stock_generate(model, r, 10, stop, pad) for r in mixed]
    assert len({len(e) for e in expected}) > 2, "rows must leave at different steps for others to join"
    done: list[int] = []
    assert greedy(model, mixed, 10, {stop}, pad, batch_size=batch_size, finished=done.append, margin=None) == expected
    assert sorted(done) == list(range(len(mixed)))


def smallest_gap(model, row, max_new_tokens, stop_id, pad_id) -> float:
    """The least gap between the two best logits along the row's greedy answer, the row run alone."""
    import torch

    with torch.inference_mode():
        out = model.generate(torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long),
                             do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop_id,
                             pad_token_id=pad_id, output_logits=True, return_dict_in_generate=True)
    gaps = []
    for logits, token in zip(out.logits, out.sequences[0, len(row):].tolist()):
        best = logits[0].topk(2).values
        gaps.append(float(best[0] - best[1]))
        if token == stop_id:
            break
    return min(gaps)


@pytest.mark.parametrize("batch_size,screened", [(2, False), (8, False), (8, True)])
def test_rows_that_all_but_tie_take_the_token_they_get_alone(model_and_rows, monkeypatch, batch_size, screened):
    """A margin between the rows' smallest gaps: the rows below it, and only they, have a step settled
    by stock ``generate`` at batch one, and every answer is still the one each prompt gets alone;
    with the output layer run in float32, or screened in bfloat16 (``gatekeeper/head.py``)."""
    import gatekeeper.runtime.hf.decoding as decoding
    import gatekeeper.runtime.hf.head

    monkeypatch.setattr(gatekeeper.runtime.hf.head, "has_fast_bf16", lambda device: screened)

    model, tokenizer, rows = model_and_rows
    stop, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    gaps = sorted((smallest_gap(model, r, 12, stop, pad), i) for i, r in enumerate(rows))
    # the margin halfway across the widest step between neighbouring gaps: far from every row's gap
    _, k = max((b[0] - a[0], k) for k, (a, b) in enumerate(zip(gaps, gaps[1:])))
    margin = (gaps[k][0] + gaps[k + 1][0]) / 2
    assert gaps[k + 1][0] - gaps[k][0] > 1e-3  # batching moves a float32 gap by far less
    settled, alone = [], decoding.token_alone

    def spy(model, row, answer, pad_id):
        settled.append(row)
        return alone(model, row, answer, pad_id)

    monkeypatch.setattr(decoding, "token_alone", spy)
    answers = greedy(model, rows, 12, {stop}, pad, batch_size=batch_size, margin=margin)
    assert answers == [stock_generate(model, r, 12, stop, pad) for r in rows]
    assert sorted({rows.index(r) for r in settled}) == sorted(i for _, i in gaps[: k + 1])


def test_the_token_alone_is_the_next_one_stock_generate_writes(model_and_rows):
    from gatekeeper.runtime.hf.decoding import token_alone

    model, tokenizer, rows = model_and_rows
    pad = tokenizer.pad_token_id
    for row in rows[:3]:
        answer = stock_generate(model, row, 8, None, pad)
        assert [token_alone(model, row, answer[:k], pad) for k in range(8)] == answer
        assert token_alone(model, row, [answer[1]] * 3, pad) is None  # not the prompt's own path: nothing to settle


def test_a_settled_token_is_the_one_the_row_goes_on_from(model_and_rows, monkeypatch):
    """Where the token alone differs from the batch's pick, the row records it and decodes on from it."""
    import gatekeeper.runtime.hf.decoding as decoding

    model, tokenizer, rows = model_and_rows
    pad, row = tokenizer.pad_token_id, rows[0]
    answer = stock_generate(model, row, 10, None, pad)
    planted = next(t for t in range(100, 1000) if t not in answer)
    monkeypatch.setattr(decoding, "token_alone", lambda model, r, so_far, pad_id: planted if len(so_far) == 3 else None)
    got = greedy(model, [row, rows[1]], 10, set(), pad, margin=float("inf"))  # every step asks; only step 3 differs
    assert got[0] == answer[:3] + [planted] + stock_generate(model, row + answer[:3] + [planted], 6, None, pad)


def test_ties_are_settled_in_float32_only(model_and_rows):
    import copy

    import torch

    from gatekeeper.runtime.hf.decoding import FLOAT32_TIE_MARGIN, tie_margin

    model, _, _ = model_and_rows
    assert tie_margin(model) == FLOAT32_TIE_MARGIN
    assert tie_margin(copy.deepcopy(model).to(torch.bfloat16)) is None


def test_a_kept_prefix_is_extended_to_the_states_a_fresh_run_computes(model_and_rows):
    import torch

    from gatekeeper.runtime.hf.decoding import _prefix_states

    model, _, rows = model_and_rows
    decoder = model.get_decoder()
    longer, shorter = rows[0][:30], rows[0][:20]
    kept: dict = {}
    _prefix_states(decoder, shorter, kept)
    extended = _prefix_states(decoder, longer, kept)
    assert list(kept) == [tuple(shorter), tuple(longer)]
    fresh = _prefix_states(decoder, longer, {})
    for (k1, v1), (k2, v2) in zip(extended, fresh):
        assert k1.shape == k2.shape == (1, k1.shape[1], 30, k1.shape[-1])
        torch.testing.assert_close(k1, k2, rtol=1e-4, atol=1e-4)  # float32 rounding of other shapes
        torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-4)


def test_reserved_cache_matches_the_dynamic_cache_and_grows_past_its_room(model_and_rows):
    """Keys and values as transformers' own cache holds them, also beyond the reserved room and after rows leave."""
    import torch
    from transformers import DynamicCache

    from gatekeeper.runtime.hf.decoding import reserved_cache

    model, _, _ = model_and_rows
    stock, reserved = DynamicCache(config=model.config), reserved_cache(model.config, room=5)
    torch.manual_seed(1)
    for length in (3, 1, 4, 1):  # 9 positions in all, 4 past the room
        key, value = torch.randn(3, 2, length, 8), torch.randn(3, 2, length, 8)
        assert all(torch.equal(a, b) for a, b in zip(stock.update(key, value, 0), reserved.update(key, value, 0)))
    for cache in (stock, reserved):
        cache.batch_select_indices(torch.tensor([0, 2]))
    assert reserved.get_seq_length() == stock.get_seq_length() == 9
    assert torch.equal(reserved.layers[0].keys, stock.layers[0].keys)
    assert torch.equal(reserved.layers[0].values, stock.layers[0].values)


def test_bfloat16_greedy_equals_stock_generate_in_bfloat16(model_and_rows):
    """The same savings in the dtype a bf16 server computes in (the output layer runs as its own 2-D product)."""
    import copy

    import torch

    model, tokenizer, rows = model_and_rows
    half = copy.deepcopy(model).to(torch.bfloat16)
    stop, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    expected = [stock_generate(half, r, 12, stop, pad) for r in rows]
    assert greedy(half, rows, 12, {stop}, pad) == expected


def plain_option_logprob(model, row, option):
    """The plain way: prompt and option as one unpadded sequence, every position projected."""
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([row + option])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[len(row) - 1 + k, token]) for k, token in enumerate(option))


@pytest.mark.parametrize("texts,shared,prompts", [
    (['{"priority": "critical"', '{"priority": "low"', "x", "no way, not at all"], False, None),
    (['{"priority": "critical",', '{"priority": "low",', '{"priority": "not urgent at all",'], True, None),
    (['{"priority": "critical",', '{"priority": "not urgent at all",'], True, 1),  # one prompt: all tokens its own
])
def test_option_scores_equal_scoring_each_option_alone(model_and_rows, texts, shared, prompts):
    from gatekeeper.runtime.hf.decoding import option_logprobs

    model, tokenizer, rows = model_and_rows
    rows = rows[:prompts]
    options = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in texts]
    assert (common_prefix_length(options) > 0) == shared  # tokens every option starts with run with the prompt
    assert len({len(o) for o in options}) >= 2  # options of different lengths: padding inside the option block
    fast = option_logprobs(model, rows, options, tokenizer.pad_token_id)
    assert fast.shape == (len(rows), len(options))
    for i, row in enumerate(rows):
        for j, option in enumerate(options):
            plain = plain_option_logprob(model, row, option)
            assert abs(float(fast[i, j]) - plain) < 1e-3, (i, j, float(fast[i, j]), plain)
