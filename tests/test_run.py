"""`compress run` end to end on a tiny Llama folder and the real data dir."""

import json

import pytest

from compress.cli import main
from compress.bits.planner import BitsConfig, make_plan
from compress.scores import HIGHER, LayerScores


def test_make_plan_policies():
    scores = LayerScores(4, {"lim": (0.9, 0.1, 0.5, 0.3)}, {"lim": HIGHER})
    plan = make_plan(4, scores, BitsConfig(avg_bits=3.0, scorer="lim"))
    assert plan.bits == (4, 2, 4, 2)  # the two least important layers (1, 3) go to 2 bits
    assert plan.layers[1].reason == "lim rank 3/4"
    assert make_plan(4, None, BitsConfig(bits="3")).bits == (3, 3, 3, 3)
    budget = make_plan(4, scores, BitsConfig(avg_bits=3.0, bit_choices=(2, 3, 4, 8), scorer="lim"))
    assert sum(budget.bits) / 4 <= 3.0 and budget.bits[0] >= budget.bits[1]
    assert make_plan(4, None, BitsConfig(avg_bits=3.0, scorer="random"), seed=1).bits.count(2) == 2


def test_run_writes_a_checkpoint_with_its_plan(gptqmodel, tiny5, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--avg-bits", "3.2", "--allocator",
                 "layers", "--scorer", "zd", "--rounding", "gptq",
                 "--calib-samples", "8", "--calib-seq-len", "64", "--max-windows", "2", "--out", str(out)])
    assert code == 0
    assert {"config.json", "model.safetensors", "plan.json", "scores.json", "stats.json", "settings.json"} <= {
        p.name for p in out.iterdir()}
    plan = json.loads((out / "plan.json").read_text())
    bits = [row["bits"] for row in plan["layers"]]
    assert sorted(bits) == [2, 2, 4, 4, 4]  # round(5 * (4 - 3.2) / 2) = 2 layers at 2 bits
    stats = json.loads((out / "stats.json").read_text())
    assert stats["ppl_before"]["windows"] == 2 and stats["ppl_after"]["ppl"] > 1
    dynamic = json.loads((out / "config.json").read_text())["quantization_config"]["dynamic"]
    assert len(dynamic) == 2 and all(v == {"bits": 2} for v in dynamic.values())
    printed = capsys.readouterr().out
    assert "stored bits per decoder weight" in printed and "before" in printed


def test_default_mixed_run_gives_each_fused_unit_its_option(gptqmodel, tiny5, data_dir, tmp_path, capsys):
    """`--bits mixed` by default: the rounding chosen by measured KL (auto), per-unit options from the knapsack on
    Fisher costs of that rounding's weights, written as per-module `dynamic` rules; the checkpoint stays within
    the budget and loads with GPTQModel."""
    pytest.importorskip("auto_round")
    from compress.model import load_gptq

    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--avg-bits", "4.2", "--calib-samples",
                 "12", "--calib-seq-len", "32", "--max-windows", "1", "--out", str(out)])
    assert code == 0
    plan = json.loads((out / "plan.json").read_text())
    assert all(set(row["units"]) == {"qkv", "o", "gate_up", "down"} for row in plan["layers"])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["effective_bits"] <= 4.2 and stats["allocation"]["bits_per_decoder_weight"] == pytest.approx(
        stats["effective_bits"])
    choice = stats["rounding_choice"]  # --rounding auto: both roundings measured, the lower KL kept and used
    assert set(choice["kl"]) == {"gptq", "opt-rtn"} and choice["rounding"] == min(choice["kl"], key=choice["kl"].get)
    assert stats["method"] == stats["allocation"]["rounding"] == choice["rounding"]
    costs = json.loads((out / "costs.json").read_text())
    assert len(costs) == 20 and all(row["3b-g32"] > row["8b-g32"] for row in costs.values())
    dynamic = json.loads((out / "config.json").read_text())["quantization_config"]["dynamic"]
    assert dynamic and all("_proj" in key for key in dynamic)  # rules name units, not whole layers
    model, _ = load_gptq(out)
    assert model is not None
    printed = capsys.readouterr().out
    assert "gate_up" in printed and "stored bits per decoder weight" in printed and "rounding auto -> " in printed


def test_auto_rounding_of_a_uniform_run_is_measured_at_its_width(gptqmodel, tiny5, data_dir, tmp_path, capsys):
    """`--bits 4` with the default `--rounding auto`: no allocator ran, so the runner measures both roundings at
    4 bits and the checkpoint's group size, records both KLs, and writes the checkpoint with the lower one."""
    pytest.importorskip("auto_round")
    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--bits", "4", "--calib-samples", "8",
                 "--calib-seq-len", "32", "--max-windows", "0", "--out", str(out)])
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    choice = stats["rounding_choice"]
    assert choice["option"].startswith("4b-g") and set(choice["kl"]) == {"gptq", "opt-rtn"}
    assert stats["method"] == choice["rounding"] == min(choice["kl"], key=choice["kl"].get)
    assert json.loads((out / "settings.json").read_text())["config"]["gptq"]["rounding"] == "auto"
    assert f"rounding auto -> {choice['rounding']}" in capsys.readouterr().out


def test_gptq_rounding_writes_the_units_options_through_gptqmodel(gptqmodel, tiny5, data_dir, tmp_path):
    """`--rounding gptq`: the same per-unit plan with costs from GPTQ's solver, the checkpoint written by
    GPTQModel with one `dynamic` rule per unit that differs from the base; every module at its unit's width."""
    from compress.model import load_gptq
    from compress.quant.gptq_config import resolve_bits

    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--avg-bits", "4.2", "--rounding",
                 "gptq", "--calib-samples", "12", "--calib-seq-len", "32", "--max-windows", "1", "--out", str(out)])
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["method"] == "gptq" and stats["allocation"]["rounding"] == "gptq"
    assert stats["effective_bits"] <= 4.2
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "gptq" and config.get("provider") != "auto-round"
    plan = json.loads((out / "plan.json").read_text())
    chosen = {(row["index"], unit): label for row in plan["layers"] for unit, label in row["units"].items()}
    module = {"qkv": "self_attn.k_proj", "o": "self_attn.o_proj", "gate_up": "mlp.up_proj", "down": "mlp.down_proj"}
    for (layer, unit), label in chosen.items():  # every module at its unit's width, by `dynamic` or the base
        name = f"model.layers.{layer}.{module[unit]}"
        assert resolve_bits(config["dynamic"], name, config["bits"]) == int(label.split("b")[0]), (name, label)
    model, _ = load_gptq(out)
    assert model is not None


@pytest.mark.parametrize("argv, message", [
    (["--avg-bits", "5", "--allocator", "layers"], "outside the range"),
    (["--avg-bits", "12"], "is outside what the options allow on this model"),
    (["--avg-bits", "2.5"], "is outside what the options allow on this model"),
    (["--avg-bits", "2.2", "--options", "3b-g32,4b-g32"], "is outside what the options allow on this model"),
    (["--options", "5b-g64"], "options (--options) cannot take '5b-g64': option bits must be one of 2, 3, 4, 8"),
    (["--options", "4bits"], "must look like 4b-g64"),
    (["--bit-choices", "4,5"], "chosen from 2, 3, 4, 8"),
    (["--scorer", "magic"], "scorer (--scorer) must be one of lim, bi"),
])
def test_bad_run_input_is_one_line(tiny5, data_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    code = main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_knapsack_on_measured_sensitivity_without_perplexity(gptqmodel, tiny5, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--avg-bits", "3.5", "--bit-choices",
                 "2,3,4,8", "--allocator", "layers", "--scorer", "sensitivity", "--rounding", "gptq", "--calib-samples", "8",
                 "--calib-seq-len", "64",
                 "--max-windows", "0", "--group-size", "32", "--out", str(out)])
    assert code == 0
    costs = json.loads((out / "costs.json").read_text())
    assert len(costs) == 5 and all(set(row) == {"2", "3", "4", "8"} for row in costs)
    plan = json.loads((out / "plan.json").read_text())
    assert sum(row["bits"] for row in plan["layers"]) <= 3.5 * 5
    assert plan["layers"][0]["reason"].startswith("knapsack on measured KL")
    stats = json.loads((out / "stats.json").read_text())
    assert "ppl_after" not in stats and stats["effective_bits"] > 2
    assert "perplexity" not in capsys.readouterr().out


def test_a_plan_for_another_model_is_refused(tiny5, data_dir, tmp_path, capsys):
    from compress.plan import Plan

    plan = tmp_path / "plan.json"
    plan.write_text(Plan.uniform(30, 4).to_json())
    code = main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--plan", str(plan), "--out",
                 str(tmp_path / "never")])
    assert code == 2 and "plan has 30 layers but the model has 5" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_missing_plan_file_is_one_line(tiny5, data_dir, tmp_path, capsys):
    code = main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--plan", str(tmp_path / "nope.json"),
                 "--out", str(tmp_path / "never")])
    assert code == 2 and "plan file" in capsys.readouterr().err
