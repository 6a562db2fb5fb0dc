"""The overlap detector on planted copies: each method finds its kind, clean data stays clean."""

import random

import pytest

from gatekeeper.gating.overlap import (
    OverlapSettings,
    ReferenceIndex,
    find_duplicates,
    find_overlaps,
    normalize,
)
from tests.conftest import VOCABULARY, distinct_items


def texts(count: int, seed: int, words: int = 20) -> list[str]:
    return [item["input"] for item in distinct_items("x", count, seed, words)]


def pairs(found) -> dict[tuple[int, int], str]:
    return {(o.probe, o.reference): o.method for o in found}


def test_normalisation_ignores_case_punctuation_and_spacing():
    assert normalize("  Re-Boot the VPN, NOW!!\n(please)") == "reboot the vpn now please"
    assert normalize("Ｆｕｌｌ　ｗｉｄｔｈ") == "full width"  # NFKC
    assert normalize("snake_case ...") == "snakecase"
    assert normalize("?!") == ""


def test_each_planted_kind_is_found_by_its_method_and_nothing_else():
    probes = texts(6, seed=1)
    words = probes[2].split()
    words[3], words[11] = "changed", "words"  # a paraphrase: two words changed...
    words[7], words[8] = words[8], words[7]  # ...and two swapped
    long_run = " ".join(random.Random(5).choices(VOCABULARY, k=30) + probes[3].split()[:13])
    references = texts(200, seed=2) + [
        probes[0],  # verbatim
        probes[1].upper().replace(" ", " ,  ") + "!",  # re-cased and re-punctuated
        " ".join(words),
        long_run,  # 13 words of probe 3 inside an otherwise different text
    ]
    found = find_overlaps(probes, references)
    assert pairs(found) == {(0, 200): "exact", (1, 201): "exact", (2, 202): pairs(found)[(2, 202)], (3, 203): "ngram"}
    assert pairs(found)[(2, 202)] in ("minhash", "fuzzy")
    ngram = next(o for o in found if o.method == "ngram")
    assert ngram.score == pytest.approx(1 / 8)  # one of the probe's eight 13-grams


def test_ngram_length_is_a_parameter():
    probe = texts(1, seed=3)[0]
    inside = " ".join(random.Random(6).choices(VOCABULARY, k=40) + probe.split()[:8])
    assert not find_overlaps([probe], [inside])  # an 8-word run is no 13-gram
    found = find_overlaps([probe], [inside], OverlapSettings(ngram_n=8))
    assert [(o.method, o.score) for o in found] == [("ngram", round(1 / 13, 4))]


def test_clean_distinct_texts_give_no_pairs():
    assert find_overlaps(texts(300, seed=4), texts(2000, seed=5)) == []


def test_related_but_different_tickets_are_not_flagged():
    probes = [
        "The printer on floor 3 jams every morning and nobody can print invoices.",
        "Customers in Germany are charged twice when they pay with PayPal.",
        "The login page times out after the password reset email is sent.",
    ]
    references = [
        "The printer driver crashes on the design team's laptops after the update.",
        "Customers in France cannot pay with PayPal since the checkout redesign.",
        "The password reset email never arrives for accounts created before 2020.",
    ]
    assert find_overlaps(probes, references) == []


def test_lsh_compares_only_candidates_not_all_pairs(monkeypatch):
    from rapidfuzz import process

    compared = []
    real = process.cdist

    def counting(queries, choices, **kwargs):
        compared.append(len(choices))
        return real(queries, choices, **kwargs)

    monkeypatch.setattr(process, "cdist", counting)
    probes, references = texts(50, seed=6, words=12), texts(2000, seed=7, words=12)  # too short for 13-grams
    references[1234] = probes[10].replace(probes[10].split()[0], "changed")
    found = find_overlaps(probes, references)
    assert pairs(found) == {(10, 1234): "minhash"}
    assert sum(compared) < 0.01 * len(probes) * len(references)


def test_duplicates_inside_one_set_are_reported_once_later_row_first():
    rows = texts(40, seed=8)
    rows[30] = rows[5].title() + "."
    rows[35] = rows[5]
    found = find_duplicates(rows)
    assert [(o.probe, o.reference, o.method) for o in found] == [(30, 5, "exact"), (35, 5, "exact"), (35, 30, "exact")]


def test_results_are_sorted_and_repeatable():
    probes = texts(30, seed=9)
    references = texts(300, seed=10) + [p.upper() for p in probes[::3]]
    index = ReferenceIndex(references)
    first = index.find(probes)
    assert first == sorted(first) and len(first) == 10
    assert first == ReferenceIndex(references).find(probes)


def test_empty_and_punctuation_only_texts_match_nothing():
    assert find_overlaps(["", "?!"], ["", "...", "real words here"]) == []


@pytest.mark.parametrize(
    "change, message",
    [({"ngram_n": 0}, "ngram_n"), ({"jaccard": 1.5}, "jaccard"), ({"scorer": "WRatio"}, "scorer"),
     ({"num_perm": 8}, "num_perm")],
)
def test_settings_name_the_bad_value(change, message):
    with pytest.raises(ValueError, match=message):
        OverlapSettings(**change)


def test_a_copy_with_typos_is_found_by_the_fuzzy_score():
    """Misspelt words are different words to Jaccard, but nearly the same characters."""
    probe = texts(1, seed=11, words=12)[0]
    words = probe.split()
    for k in (1, 5, 9):
        words[k] = words[k][:-1] + ("x" if words[k][-1] != "x" else "y")
    found = find_overlaps([probe], texts(500, seed=12, words=12) + [" ".join(words)])
    assert [(o.reference, o.method) for o in found] == [(500, "fuzzy")]
    assert found[0].score >= 0.9
    assert not find_overlaps([probe], [" ".join(words)], OverlapSettings(fuzzy=0.99))
