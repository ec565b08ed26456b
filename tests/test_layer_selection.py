"""Layer-selection policies for removal/skipping: pure, no model."""

import pytest

from compress.errors import CompressError
from compress.depth.select import (check_drop, contiguous_block, drop_count, greedy_drop, greedy_order,
                                      least_important, random_drop, uls_drop, uls_dropped, uls_kept)


def test_uls_matches_the_reference_rule():
    assert uls_kept(32, 5) == [0, 6, 12, 18, 24, 31]  # the check
    # shared/reference/algorithms.md §5.1, derived from the reference code
    assert uls_kept(30, 5) == [0, 6, 12, 18, 24, 29]
    assert uls_kept(30, 3) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 29]
    assert uls_kept(30, 10) == [0, 15, 29]
    assert uls_kept(32, 10) == [0, 16, 31]
    assert uls_kept(40, 10) == [0, 13, 26, 39]
    assert uls_kept(32, 2) == [*range(0, 30, 2), 31]
    assert uls_dropped(32, 5) == [i for i in range(32) if i not in (0, 6, 12, 18, 24, 31)]
    with pytest.raises(CompressError, match="at most 15"):
        uls_kept(30, 20)


def test_uls_for_a_drop_count_is_balanced():
    # an integer speed-up's count gives the reference pattern
    assert uls_drop(32, 26) == uls_dropped(32, 5)
    assert uls_drop(30, 15) == uls_dropped(30, 2)
    # below 2x the reference step is 1 (it would drop 21..28 for L=30, n=8): spread evenly instead
    assert uls_drop(30, 8) == [2, 6, 9, 13, 16, 20, 23, 27]
    assert uls_drop(30, 3) == [5, 15, 24]
    assert uls_drop(30, 0) == []
    for n in range(1, 29):
        dropped = uls_drop(30, n)
        assert len(dropped) == n and 0 not in dropped and 29 not in dropped
        if n < 15:  # evenly spread: consecutive dropped layers are floor or ceil of 28/n apart
            assert {b - a for a, b in zip(dropped, dropped[1:])} <= {28 // n, -(-28 // n)}
    with pytest.raises(CompressError, match="at most 28"):
        uls_drop(30, 29)


def test_shortgpt_drops_the_low_end_of_the_importance_order():
    order = [0, 6, 1, 2, 5, 4, 3]  # most important first
    assert least_important(order, 3) == [3, 4, 5]
    assert least_important(order, 0) == []
    with pytest.raises(ValueError, match="permutation"):
        least_important([0, 0, 1], 1)


def test_gromov_drops_the_run_with_the_smallest_angular_distance():
    # 6 layers, runs of 2: distance between inputs of l and l+2 for l = 0..4
    assert contiguous_block([0.5, 0.4, 0.2, 0.3, 0.6], 6, 2) == [2, 3]
    assert contiguous_block([0.1, 0.1, 0.3], 4, 2) == [0, 1]  # first on ties
    with pytest.raises(ValueError, match="need 5 distances"):
        contiguous_block([0.1, 0.2], 6, 2)


def test_greedy_removes_the_cheapest_layer_given_the_ones_already_removed():
    # loss: removing layer 2 is free alone, but 2 and 3 together are expensive; 1 is cheap second
    costs = {(2,): 0.0, (1, 2): 1.0, (2, 3): 9.0}
    evaluated = []

    def loss(dropped):
        evaluated.append(tuple(dropped))
        return costs.get(tuple(dropped), 5.0)

    assert greedy_drop(5, 2, loss) == [1, 2]
    assert len(evaluated) == 5 + 4
    assert greedy_order(5, 2, loss) == [(2, 0.0), (1, 1.0)]  # removal order and the loss after each step


def test_random_is_seeded_and_distinct():
    a = random_drop(30, 8, seed=1)
    assert a == random_drop(30, 8, seed=1) and len(set(a)) == 8 and a == sorted(a)
    assert a != random_drop(30, 8, seed=2)


def test_drop_count_options():
    assert drop_count(30, drop=5) == 5
    assert drop_count(30, drop_ratio=0.25) == 8  # round(7.5)
    assert drop_count(32, drop_ratio=0.25) == 8
    assert drop_count(32, speedup=5) == 26  # keeps 6
    for kwargs, message in [({}, "exactly one"), ({"drop": 1, "speedup": 2}, "exactly one"),
                            ({"drop_ratio": 1.0}, r"\[0, 1\)"), ({"drop_ratio": -0.1}, r"\[0, 1\)"),
                            ({"drop": 30}, "at least one must stay"), ({"speedup": 0.5}, ">= 1")]:
        with pytest.raises(CompressError, match=message):
            drop_count(30, **kwargs)


def test_bad_indices_are_one_line_errors():
    with pytest.raises(CompressError, match="duplicate"):
        check_drop([1, 1], 4)
    with pytest.raises(CompressError, match="out of range 0..3"):
        check_drop([4], 4)
    with pytest.raises(CompressError, match="all 2 layers"):
        check_drop([0, 1], 2)
    assert check_drop([3, 1], 4) == [1, 3]
