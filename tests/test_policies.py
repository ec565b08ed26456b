import itertools
import random

import pytest

from compress.bits.allocate import (
    budgeted_bits,
    layerwise_bits,
    proxy_costs,
    random_order,
)
from compress.errors import CompressError
from compress.quant.storage import effective_bits


@pytest.mark.parametrize("n, moved", [(32, 12), (30, 11), (40, 15)])
def test_layerwise_count_rule(n, moved):
    order = list(range(n))  # layer 0 most important
    bits = layerwise_bits(order, 3.25, (4, 2))
    assert bits.count(2) == moved
    assert bits[:n - moved] == [4] * (n - moved)  # the least important (last in order) go low
    assert layerwise_bits(order, 4, (2, 4)) == [4] * n
    assert layerwise_bits(order, 2, (4, 2)) == [2] * n


def test_layerwise_follows_the_order_not_the_index():
    order = [3, 1, 0, 2]
    assert layerwise_bits(order, 3.0, (4, 2)) == [2, 4, 2, 4]


def test_layerwise_bad_input():
    with pytest.raises(CompressError, match="outside the range"):
        layerwise_bits([0, 1], 4.5, (4, 2))
    with pytest.raises(CompressError, match="chosen from 2, 3, 4, 8"):
        layerwise_bits([0, 1], 3, (4, 5))
    with pytest.raises(CompressError, match="two widths"):
        layerwise_bits([0, 1], 3, (2, 3, 4))


def test_effective_bits_counts_scale_and_zero():
    assert effective_bits(4, 64) == 4 + 20 / 64
    assert effective_bits(2, None) == 2.0
    assert effective_bits(16, 64) == 16.0


def brute_force(costs, params, avg, groups):
    best = None
    for choice in itertools.product(*[sorted(c) for c in costs]):
        stored = sum(p * effective_bits(b, g) for p, b, g in zip(params, choice, groups))
        if stored <= avg * sum(params) * (1 + 1e-12):
            cost = sum(c[b] for c, b in zip(costs, choice))
            if best is None or cost < best[0] - 1e-15:
                best = (cost, list(choice))
    return best


def test_budgeted_is_exact_against_brute_force():
    rng = random.Random(0)
    for trial in range(40):
        n = rng.randint(1, 6)
        widths = rng.sample([2, 3, 4, 8], rng.randint(1, 4))
        costs = [{b: rng.random() * 4.0 ** -b * rng.choice([1, 10]) for b in widths} for _ in range(n)]
        params = [rng.choice([1000, 2000, 5000]) for _ in range(n)]
        groups = [rng.choice([None, 32, 64]) for _ in range(n)]
        low = min(effective_bits(min(widths), g) for g in groups)
        avg = rng.uniform(low, 8.5)
        expected = brute_force(costs, params, avg, groups)
        if expected is None:
            with pytest.raises(CompressError, match="below the smallest possible"):
                budgeted_bits(costs, params, avg, groups)
            continue
        got = budgeted_bits(costs, params, avg, groups)
        assert sum(c[b] for c, b in zip(costs, got)) == pytest.approx(expected[0], rel=1e-12), trial


def test_budgeted_spends_more_bits_on_costly_layers_and_respects_budget():
    order = list(range(30))
    costs = proxy_costs(order, (2, 3, 4, 8))
    params = [1_000_000] * 30
    bits = budgeted_bits(costs, params, 3.5, [64] * 30)
    assert sum(effective_bits(b, 64) for b in bits) / 30 <= 3.5 + 1e-9
    assert bits[0] >= bits[-1]  # the most important layer gets at least the bits of the least important
    more = budgeted_bits(costs, params, 4.5, [64] * 30)
    assert sum(c[b] for c, b in zip(costs, more)) <= sum(c[b] for c, b in zip(costs, bits))


def test_random_order_is_seeded_permutation():
    assert random_order(10, 1) == random_order(10, 1)
    assert random_order(10, 1) != random_order(10, 2)
    assert sorted(random_order(10, 3)) == list(range(10))
