"""Per-unit allocation math without a model: fused units, exact GPTQ bytes, the multiple-choice knapsack and
GPTQ's solver."""

import itertools
import re

import numpy as np
import pytest
import torch

from compress.bits import knapsack
from compress.bits.options import option_grid, unit_options
from compress.model.units import group_units, unit_pattern
from compress.plan import Option
from compress.quant.storage import linear_bytes, unit_bytes
from compress.errors import CompressError
from compress.quant.gptq_solve import gptq_weights, output_error
from compress.quant.rtn import fake_quantize

LAYER = [(f"model.layers.0.{n}", 0, s) for n, s in [
    ("self_attn.q_proj", (576, 576)), ("self_attn.k_proj", (192, 576)), ("self_attn.v_proj", (192, 576)),
    ("self_attn.o_proj", (576, 576)), ("mlp.gate_proj", (1536, 576)), ("mlp.up_proj", (1536, 576)),
    ("mlp.down_proj", (576, 1536))]]


def test_smollm2_layer_has_four_fused_units():
    units = group_units(LAYER)
    assert [u.name for u in units] == ["qkv", "o", "gate_up", "down"]
    assert [u.params for u in units] == [552960, 331776, 1769472, 884736]  # issue 15's 553k / 332k / 1.77M / 885k
    assert units[0].modules[2].endswith("v_proj") and units[3].in_features == 1536
    pattern = re.compile(unit_pattern(units[0]))
    # GPTQModel matches the shards' names, vLLM the fused one; nothing of layer 10 or the o_proj matches
    assert all(pattern.match(f"model.layers.0.self_attn.{n}") for n in ("q_proj", "k_proj", "v_proj", "qkv_proj"))
    assert not any(pattern.match(n) for n in ("model.layers.0.self_attn.o_proj", "model.layers.00.self_attn.q_proj"))
    assert re.compile(unit_pattern(units[3])).match("model.layers.0.mlp.down_proj")


def test_bytes_match_gptqmodel_tensors():
    # SmolLM2 k_proj at 3 bits, g64: qweight int32 (576*3/32, 192), qzeros int32 (9, 192*3/32),
    # scales fp16 (9, 192), g_idx int32 (576,) -- the shapes GPTQModel 7.6 saves
    assert linear_bytes(192, 576, Option(3, 64)) == 4 * 54 * 192 + 4 * 9 * 18 + 2 * 9 * 192 + 4 * 576
    # per-channel: one group
    assert linear_bytes(576, 1536, Option(4, None)) == 4 * 192 * 576 + 4 * 1 * 72 + 2 * 576 + 4 * 1536
    # close to bits + (16 + bits) / g per weight on a big matrix
    assert linear_bytes(4096, 4096, Option(4, 128)) * 8 / 4096**2 == pytest.approx(4 + 20 / 128, abs=0.01)


def test_options_a_width_cannot_take_are_refused():
    down, qkv = group_units(LAYER)[3], group_units(LAYER)[0]
    assert Option(4, 128) in unit_options(down, option_grid())
    assert Option(4, 128) not in unit_options(qkv, option_grid())  # 576 % 128 != 0
    with pytest.raises(CompressError, match="group size 128 does not divide its input width 576"):
        unit_bytes(qkv, Option(4, 128))
    with pytest.raises(CompressError, match="can take none of the options"):
        unit_options(qkv, [Option(4, 128)])


@pytest.mark.parametrize("label", ["4b-g64", "3b-ch", "2b-g32-asym", "8b-g128"])
def test_option_labels_round_trip(label):
    assert Option.parse(label).label == label


@pytest.mark.parametrize("text", ["5b-g64", "4b-g48", "4bits", ""])
def test_bad_option_is_one_line(text):
    with pytest.raises(CompressError):
        Option.parse(text)


def brute_force(costs, sizes, budget):
    best = None
    for combo in itertools.product(*[range(len(c)) for c in costs]):
        size = sum(sizes[u][k] for u, k in enumerate(combo))
        cost = sum(costs[u][k] for u, k in enumerate(combo))
        if size <= budget and (best is None or cost < best[0]):
            best = (cost, combo)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_knapsack_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    costs = [list(rng.random(3)) for _ in range(6)]
    sizes = [list(rng.integers(1, 20, 3) * 256) for _ in range(6)]  # on the 256-byte grid: exact
    solution = knapsack.solve(costs, sizes, 120 * 256)
    for budget in (30 * 256, 55 * 256, 90 * 256):
        want = brute_force(costs, sizes, budget)
        if want is None:
            with pytest.raises(CompressError, match="below the smallest plan"):
                knapsack.pick(solution, budget)
            continue
        got = knapsack.pick(solution, budget)
        assert sum(sizes[u][k] for u, k in enumerate(got)) <= budget
        assert sum(costs[u][k] for u, k in enumerate(got)) == pytest.approx(want[0])


def test_knapsack_never_exceeds_true_bytes_and_refuses_too_small_budgets():
    costs, sizes = [[1.0, 0.0]] * 4, [[100, 300]] * 4  # off the grid: sizes round up
    for budget in (1100, 1600, 2000):
        got = knapsack.pick(knapsack.solve(costs, sizes, 2000), budget)
        assert sum(sizes[u][k] for u, k in enumerate(got)) <= budget
        assert sum(got) == min(4, budget // 256 - 4)  # 100 B takes 1 step of 256, 300 B takes 2
    with pytest.raises(CompressError, match="below the smallest plan"):
        knapsack.pick(knapsack.solve(costs, sizes, 2000), 300)


def test_gptq_with_identity_hessian_is_round_to_nearest():
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(0))
    for bits in (2, 3, 4):
        assert torch.allclose(gptq_weights(w, torch.eye(128), bits, 32, damp=1e-9), fake_quantize(w, bits, 32),
                              atol=1e-6)


def test_gptq_beats_rounding_on_correlated_inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 64, generator=gen) @ torch.randn(64, 64, generator=gen)  # correlated features
    h = x.t() @ x / len(x)
    w = torch.randn(48, 64, generator=gen)
    for bits, group in ((2, 32), (3, None), (4, 64)):
        gptq, rtn = gptq_weights(w, h, bits, group, damp=0.01), fake_quantize(w, bits, group or 64)
        assert output_error(w, gptq, h) < 0.7 * output_error(w, rtn, h)
    asym = gptq_weights(w + 1.0, h, 3, 32, sym=False)  # a shifted matrix: the asymmetric grid adapts
    assert output_error(w + 1.0, asym, h) < output_error(w + 1.0, gptq_weights(w + 1.0, h, 3, 32), h)


def test_unit_plan_fills_the_budget_and_puts_bits_where_the_fisher_cost_is():
    """On a tiny Llama: every unit gets an option, the plan stays within the byte budget and uses most of it,
    a larger budget never costs more, and the plan goes through GPTQ's config as per-unit rules."""
    from compress.bits.unit_plan import budget_bytes, unit_plan
    from compress.model.units import model_units
    from compress.quant.gptq import GPTQConfig, plan_config
    from conftest import tiny_model

    model = tiny_model("llama", hidden_size=64, intermediate_size=128)
    calib = torch.randint(0, 256, (12, 32), generator=torch.Generator().manual_seed(0))
    units = model_units(model)
    options = option_grid(groups=(32, 64, None))
    small = unit_plan(model, calib, 3.0, options, grad_rows=4, progress=False, check=False)
    large = unit_plan(model, calib, 4.5, options, rounds=1, grad_rows=4, progress=False, check=False)
    for result, bits in ((small, 3.0), (large, 4.5)):
        assert sum(len(d.units) for d in result.plan.layers) == len(units)
        assert 0.9 * budget_bytes(units, bits) < result.stats["decoder_bytes"] <= budget_bytes(units, bits)
        assert result.stats["bits_per_decoder_weight"] <= bits
    assert len(large.stats["kl_trace"]) == 2 and small.stats["kl_trace"] == []
    assert plan_config(model, large.plan, GPTQConfig()).effective_bits == pytest.approx(
        large.stats["bits_per_decoder_weight"])


def test_streamed_fisher_costs_equal_the_tables():
    """rounds 0 drops each rounded weight once costed; the numbers must be those of the kept table."""
    from compress.model.units import model_units
    from compress.bits.unit_costs import (fisher_costs, gradients, proxy_costs, rounded_table,
                                          unit_hessians)
    from conftest import tiny_model

    model = tiny_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2)
    calib = torch.randint(0, 256, (6, 32), generator=torch.Generator().manual_seed(0))
    units = model_units(model)
    options = option_grid(widths=(2, 4), groups=(32, None))
    hessians = unit_hessians(model, units, calib, progress=False)
    grad, fisher = gradients(model, calib, units, batch_size=2, progress=False)
    table = rounded_table(model, units, hessians, options, progress=False)
    kept = proxy_costs(model, units, table, hessians, grad, fisher)["fisher"]
    streamed = fisher_costs(model, units, hessians, options, fisher, progress=False)
    for unit in units:
        for option in options:
            assert streamed[unit.key][option] == pytest.approx(kept[unit.key][option], rel=0.05)  # fp16 table
        assert streamed[unit.key][Option(2, 32)] > streamed[unit.key][Option(4, 32)] > 0


def test_gradient_point_is_the_width_nearest_the_budget():
    from compress.bits.unit_plan import gradient_point

    default = option_grid(widths=(3, 4, 8))
    assert gradient_point(3.25, default) == Option(3, 64)  # 3b-g64 stores 3.30 bits, 4b-g64 4.33
    assert gradient_point(4.0, default) == Option(4, 64)
    assert gradient_point(2.5, option_grid()) == Option(2, 64)
    assert gradient_point(3.0, [o for o in option_grid(asym=True) if not o.sym]) == Option(3, 64, False)


def test_relinearise_keeps_the_allocation_of_lowest_kl_and_linearises_at_the_last():
    from compress.bits.unit_plan import relinearise

    seen, kls = [], {0: 0.5, 1: 0.3, 2: 0.4}

    def costs_at(allocation, r):
        seen.append((allocation["a"], r))
        return r

    alloc, costs, trace = relinearise({"a": "start"}, 2, costs_at, lambda c: {"a": c}, lambda a: kls[a["a"]])
    assert (alloc, costs, trace) == ({"a": 1}, 1, [0.5, 0.3, 0.4])
    assert seen == [("start", 0), (0, 1), (1, 2)]
    assert relinearise({"a": "start"}, 1, costs_at, lambda c: {"a": c}) == ({"a": 1}, 1, [])


def test_default_options_leave_out_what_was_measured_to_fail():
    """2-bit (underrated by the Fisher costs) and 4-bit per channel (GPTQModel's CPU int4 kernel takes group
    sizes 32-256 only) are not in `--bits mixed`'s default options; every other 3/4/8-bit option is."""
    from compress.bits.options import default_options
    from compress.bits.planner import BitsConfig

    labels = {o.label for o in default_options()}
    assert "4b-ch" not in labels and not any(o.bits == 2 for o in default_options())
    assert {"3b-ch", "8b-ch", "4b-g32", "4b-g64", "4b-g128", "3b-g64"} <= labels
    assert BitsConfig().option_list == default_options()


def test_choose_rounding_keeps_the_rounding_with_the_lower_measured_kl():
    """`--rounding auto`: both roundings of the whole tiny Llama at one option are measured against the float
    model on held-out rows; the lower KL wins, each KL is that rounding's own (re-measured here), the float model
    is left as it was, and asymmetric grids go to GPTQ without measuring (opt-RTN rounds symmetric grids only)."""
    from compress.bits.rounding import choose_rounding, unit_option
    from compress.bits.unit_costs import (allocation_applied, kl_to, linear_modules, log_probs, round_unit,
                                          unit_hessians, unit_weight)
    from compress.model.units import model_units
    from conftest import tiny_model

    model = tiny_model("llama", hidden_size=64, intermediate_size=96)  # 96: g64 does not divide down's width
    units = model_units(model)
    calib = torch.randint(0, 256, (10, 32), generator=torch.Generator().manual_seed(1))
    rows, hessians = calib[:2], unit_hessians(model, units, calib[2:], progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    option = Option(2, 64)
    chosen, kls = choose_rounding(model, units, hessians, option, rows, log_probs(model, rows))
    assert set(kls) == {"gptq", "opt-rtn"} and chosen == min(kls, key=kls.get) and kls[chosen] < kls[
        "gptq" if chosen == "opt-rtn" else "opt-rtn"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    down = next(u for u in units if u.name == "down")
    assert unit_option(down, option) == Option(2, None) and unit_option(units[0], option) == option
    mods, reference = linear_modules(model), log_probs(model, rows)
    table = {u.key: {unit_option(u, option): round_unit(unit_weight(mods, u), hessians[u.key], unit_option(u, option),
                                                        "opt-rtn").half()} for u in units}
    with allocation_applied(model, units, table, {u.key: unit_option(u, option) for u in units}):
        assert kl_to(model, rows, reference) == pytest.approx(kls["opt-rtn"], abs=1e-5)
    assert choose_rounding(model, units, hessians, Option(3, 32, False), rows, reference) == ("gptq", {})


def test_level_switch_trades_options_between_two_units_of_one_kind_and_never_grows_the_plan():
    import random

    from compress.bits.search import level_switch

    units = group_units(LAYER) + group_units([(n.replace("layers.0", "layers.1"), 1, s) for n, _, s in LAYER])
    by_key = {u.key: u for u in units}
    kinds = {}
    for u in units:
        kinds.setdefault(u.name, []).append(u.key)
    choices = {u.key: unit_options(u, option_grid()) for u in units}
    size_of = lambda k, o: unit_bytes(by_key[k], o)  # noqa: E731
    alloc = {u.key: Option(3, 64) for u in units}
    rng, changed_any = random.Random(0), 0
    for _ in range(200):
        child = level_switch(alloc, kinds, choices, size_of, rng)
        if child is None:
            continue
        diff = [k for k in alloc if child[k] != alloc[k]]
        assert 1 <= len(diff) <= 2 and len({by_key[k].name for k in diff}) == 1
        assert all(child[k] in choices[k] for k in diff)
        assert sum(size_of(k, o) for k, o in child.items()) <= sum(size_of(k, o) for k, o in alloc.items())
        changed_any += any(child[k].bits > 3 for k in diff)  # upgrades happen, paid by the other unit
        alloc = child
    assert changed_any > 0


def test_knapsack_names_the_smallest_plan_of_the_priced_options():
    """An option priced inf (left out) is not counted in the smallest plan the error names."""
    from compress.bits import knapsack

    solution = knapsack.solve([[1.0, float("inf")], [1.0, float("inf")]], [[1024, 256], [1024, 256]], 4096)
    with pytest.raises(CompressError, match=r"0\.001 MiB is below the smallest plan the options allow \(0\.002 MiB\)"):
        knapsack.pick(solution, 1536)
    assert knapsack.pick(solution, 2048) == [0, 0]
