from gatekeeper.gating.stats import (
    compare_paired,
    mcnemar_exact,
    paired_bootstrap_ci,
    smallest_detectable_n,
)


def test_mcnemar_exact_matches_binomial_tail():
    # 6 discordant pairs all one way: p = 2 * 0.5**6
    assert mcnemar_exact(0, 6) == 2 * 0.5**6
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # 1 vs 9: 2 * (C(10,0) + C(10,1)) / 2**10
    assert abs(mcnemar_exact(1, 9) - 2 * 11 / 1024) < 1e-12


def test_compare_paired_lists_flips_and_is_deterministic():
    ids = [f"i{k}" for k in range(10)]
    base = [True] * 5 + [False] * 5
    adapter = [True, True, True, True, False] + [True] * 5
    result = compare_paired(ids, base, adapter)
    assert result.to_fail == ("i4",)
    assert result.to_pass == ("i5", "i6", "i7", "i8", "i9")
    assert abs(result.delta - 0.4) < 1e-12
    assert result.ci_low <= result.delta <= result.ci_high
    assert compare_paired(ids, base, adapter) == result


def test_bootstrap_interval_is_degenerate_without_disagreement():
    assert paired_bootstrap_ci([True, False] * 5, [True, False] * 5) == (0.0, 0.0)


def test_smallest_detectable_n_grows_as_margin_shrinks():
    assert smallest_detectable_n(0.10) == 60  # 6 flips needed at alpha 0.05
    assert smallest_detectable_n(0.02) > smallest_detectable_n(0.10)
