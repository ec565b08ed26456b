"""The plans `compress run --bits mixed` checks against its knapsack (compress.bits.candidates, unit_plan's check):
pure byte arithmetic on SmolLM2's shapes, and the measured choice on a tiny model."""

import pytest
import torch

from compress.bits.candidates import candidate_plans, llamacpp_mix, more_bits_layer, plan_bytes, uniform_plans
from compress.bits.options import default_options, nearest_option, option_grid
from compress.model.units import group_units
from compress.plan import Option
from compress.quant.storage import unit_bytes

SHAPES = [("self_attn.q_proj", (576, 576)), ("self_attn.k_proj", (192, 576)), ("self_attn.v_proj", (192, 576)),
          ("self_attn.o_proj", (576, 576)), ("mlp.gate_proj", (1536, 576)), ("mlp.up_proj", (1536, 576)),
          ("mlp.down_proj", (576, 1536))]
UNITS = group_units([(f"model.layers.{i}.{n}", i, s) for i in range(30) for n, s in SHAPES])  # SmolLM2-135M
PARAMS = sum(u.params for u in UNITS)


def budget(bits: float) -> int:
    return int(bits * PARAMS / 8)


def test_use_more_bits_is_llama_cpps_rule():
    # llama.cpp use_more_bits(i, n) for n = 32: i < 4, i >= 28, and (i - 4) % 3 == 2
    assert [i for i in range(32) if more_bits_layer(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_mix_spends_the_budget_on_down_and_qkv_of_the_favoured_layers_first():
    favoured = [u for u in UNITS if u.name in ("down", "qkv") and more_bits_layer(u.layer, 30)]
    extra = sum(unit_bytes(u, Option(4, 64)) - unit_bytes(u, Option(3, 64)) for u in favoured)
    room = plan_bytes(UNITS, {u.key: Option(3, 64) for u in UNITS}) + extra + 1000  # exactly the favoured units
    mix = llamacpp_mix(UNITS, default_options(), room, 3.4)
    assert plan_bytes(UNITS, mix) <= room and all(o.group_size == 64 for o in mix.values())
    assert {u.key for u in UNITS if mix[u.key].bits == 4} == {u.key for u in favoured}
    richer = llamacpp_mix(UNITS, default_options(), budget(4.0), 4.0)  # gate_up comes last: only some of it
    assert plan_bytes(UNITS, richer) <= budget(4.0)
    assert all(richer[u.key].bits == 4 for u in UNITS if u.name != "gate_up")
    assert {richer[u.key].bits for u in UNITS if u.name == "gate_up"} == {3, 4}


def test_mix_is_none_when_its_low_width_overshoots():
    assert llamacpp_mix(UNITS, default_options(), budget(3.25), 3.25) is None  # 3b-g64 everywhere is 3.34 b


def test_uniform_plans_are_the_richest_that_fit():
    plans = uniform_plans(UNITS, default_options(), budget(3.5))
    assert list(plans) == ["uniform 3b-g64", "uniform 3b-g128"]  # 3.342 and 3.305 b; 3b-g32 is 3.64 b
    assert all(plan_bytes(UNITS, a) <= budget(3.5) for a in plans.values())
    assert uniform_plans(UNITS, default_options(), budget(3.0)) == {}  # nothing reaches below 3b-ch's 3.07 b


def test_uniform_plan_takes_the_nearest_group_the_width_allows():
    odd = group_units([("model.layers.0.mlp.down_proj", 0, (64, 96))])  # 96 % 64 != 0
    plans = uniform_plans(odd, option_grid(widths=(4,), groups=(64, None)), 10**6)
    assert plans["uniform 4b-g64"] == {"0.down": Option(4, None)}  # only per channel is left
    plans = uniform_plans(odd, option_grid(widths=(4,), groups=(32, 64, None)), 10**6)
    assert plans["uniform 4b-g64"] == {"0.down": Option(4, 32)}
    g128 = uniform_plans(UNITS, default_options(), budget(3.5))["uniform 3b-g128"]  # 576 % 128 != 0: g64 there
    assert {g128[u.key] for u in UNITS if u.in_features == 576} == {Option(3, 64)}
    assert {g128[u.key] for u in UNITS if u.in_features == 1536} == {Option(3, 128)}
    assert round(8 * plan_bytes(UNITS, g128) / PARAMS, 3) == 3.305


def test_nearest_option_keeps_the_grid_and_bits():
    odd = group_units([("model.layers.0.mlp.down_proj", 0, (64, 96))])[0]  # 96: g32 and per channel only
    assert nearest_option(odd, Option(3, 32, False)) == Option(3, 32, False)  # it fits: itself
    assert nearest_option(odd, Option(3, 128, False)) == Option(3, 32, False)  # asym stays asym
    assert nearest_option(odd, Option(4, 64), option_grid(widths=(3,))) is None  # no 4-bit option given


def test_candidates_start_with_the_knapsack_and_drop_duplicates():
    knapsack = {u.key: Option(3, 64) for u in UNITS}  # the same plan as uniform 3b-g64
    plans = candidate_plans(UNITS, default_options(), budget(3.5), 3.5, knapsack)
    assert list(plans)[0] == "knapsack" and "uniform 3b-g64" not in plans
    assert "uniform 3b-g128" in plans and "llama.cpp-style mix" in plans


def test_measured_choice_keeps_the_plan_closest_to_the_float_model():
    from compress.bits.unit_costs import log_probs, unit_hessians
    from compress.bits.unit_plan import measured_choice, unit_plan
    from compress.model.units import model_units
    from conftest import tiny_model

    model = tiny_model("llama", hidden_size=64, intermediate_size=128)
    calib = torch.randint(0, 256, (12, 32), generator=torch.Generator().manual_seed(0))
    units = model_units(model)
    hessians = unit_hessians(model, units, calib[4:], progress=False)
    rows = calib[:4]
    plans = {"two": {u.key: Option(2, None) for u in units}, "eight": {u.key: Option(8, 32) for u in units}}
    chosen, kls = measured_choice(model, units, hessians, plans, rows, log_probs(model, rows), "gptq", progress=False)
    assert chosen == "eight" and kls["eight"] < kls["two"]
    result = unit_plan(model, calib, 3.5, option_grid(groups=(32, None)), grad_rows=4, progress=False)
    checked = result.stats["checked"]
    assert "knapsack" in checked and result.stats["chosen"] == min(checked, key=checked.get)
    assert result.stats["decoder_bytes"] <= int(3.5 * sum(u.params for u in units) / 8)
    assert result.plan.layers[0].reason.endswith(f"lowest calibration KL of {len(checked)} plans")
