"""Layerwise LR math: pure, no model."""

import math

import pytest

from compress.errors import CompressError
from compress.training.lr_map import (LRPolicy, lr_multipliers, lr_policy, ramped, recompute_steps, schedule_factor)


def test_llr_linear_map_check_from_the_issue():
    # α = [2, 3, 4], η = 1e-3, [1, 5] -> [1e-3, 3e-3, 5e-3]
    lrs = [1e-3 * m for m in lr_multipliers([2, 3, 4], lr_policy("llr"))]
    assert lrs == pytest.approx([1e-3, 3e-3, 5e-3])
    # larger α (weaker heavy tail) -> larger LR, whatever the order
    assert lr_multipliers([4, 2, 3], lr_policy("llr")) == pytest.approx([5, 1, 3])
    assert lr_multipliers([2, 3, 4], lr_policy("tempbalance")) == pytest.approx([0.5, 1.0, 1.5])
    assert lr_multipliers([3, 3], lr_policy("llr")) == [1.0, 1.0]  # no spread: nobody raised


def test_other_maps():
    sqrt = lr_multipliers([1, 4, 9], lr_policy("sqrt"))  # n·√α/Σ√α = 3·[1,2,3]/6
    assert sqrt == pytest.approx([0.5, 1.0, 1.5]) and sum(sqrt) == pytest.approx(3)
    assert lr_multipliers([9, 1, 4, 16], lr_policy("step")) == pytest.approx([1 + 4 * 2 / 4, 1, 1 + 4 / 4, 1 + 4 * 3 / 4])
    assert lr_multipliers([2, 7], lr_policy("uniform")) == [1.0, 1.0]
    assert lr_multipliers([2, 3, 4], lr_policy("llr", 1, 3)) == pytest.approx([1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        lr_multipliers([2, math.inf], lr_policy("llr"))


def test_bad_policies_are_one_line_errors():
    with pytest.raises(CompressError, match="valid: llr, tempbalance, sqrt, step, uniform"):
        lr_policy("magic")
    with pytest.raises(CompressError, match="r_min <= r_max"):
        lr_policy("llr", 5, 1)
    with pytest.raises(CompressError, match="unknown LR map"):
        LRPolicy("cubic")


def test_schedule_warmup_cosine_to_a_tenth():
    assert schedule_factor(0, 100, 10) == 0 and schedule_factor(5, 100, 10) == 0.5
    assert schedule_factor(10, 100, 10) == pytest.approx(1.0)
    assert schedule_factor(55, 100, 10) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert schedule_factor(100, 100, 10) == pytest.approx(0.1) and schedule_factor(150, 100, 10) == pytest.approx(0.1)
    assert schedule_factor(0, 10, 0) == pytest.approx(1.0)


def test_ramp_and_recompute_steps():
    assert ramped(1.0, 3.0, 100, 100, 50) == 1.0
    assert ramped(1.0, 3.0, 125, 100, 50) == pytest.approx(2.0)
    assert ramped(1.0, 3.0, 150, 100, 50) == 3.0 and ramped(1.0, 3.0, 900, 100, 50) == 3.0
    assert recompute_steps(1000) == [0, 100, 200]  # K = 100 during the first 20 %
    assert recompute_steps(200) == [0]
    assert recompute_steps(1000, every=100, until=1.0)[-1] == 1000
