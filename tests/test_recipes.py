"""Recipes (compress run RECIPE.yaml): the file is checked whole before any stage starts, stages chain through
ordinary folders, reruns skip what is up to date, a killed run resumes to the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compress.cli import main

FT = "{steps: 2, batch_size: 2, seq_len: 32, eval_every: 2, eval_windows: 2}"


def _recipe(tmp_path: Path, model: Path, stages: list[str], extra: str = "", name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"model: {model}\nstages:\n" + "".join(f"  - {s}\n" for s in stages) + extra)
    return path


@pytest.mark.parametrize("stages, extra, message", [
    (["fintune: {steps: 2}"], "", "r.yaml:3: stage 1 (fintune): unknown stage 'fintune'; valid: finetune, heal, "
                                  "remove, quantize"),
    ([f"finetune: {FT}", "heal:\n      steps: 2\n      lora: 4"], "",
     "r.yaml:6: stage 2 (heal): unknown setting lora; valid: data, steps"),
    (["quantize: {bits: 4}", "finetune: {steps: 2}"], "",
     "r.yaml:4: stage 2 (finetune): finetune needs a float model as input, but its input is a GPTQ checkpoint"),
    (["remove: {ppl_windows: 0}"], "", "r.yaml:3: stage 1 (remove): remove removes nothing"),
    (["quantize: {bits: 5}"], "", "r.yaml:3: stage 1 (quantize): bit widths must be chosen from 2, 3, 4, 8; got 5"),
    (["quantize:\n      bits: 4\n      calib_samples: 0"], "",
     "r.yaml:5: stage 1 (quantize): calib_samples (--calib-samples) must be >= 1, got 0"),
    (["heal: {qlora: true, merge: false}", "quantize: {bits: 4}"], "",
     "stage 2 (quantize): quantize needs a float model as input, but its input is a LoRA adapter"),
    (["quantize: {bits: 4}"], "eval: {limt: 5}\n", "r.yaml:4: eval: unknown setting limt; valid: tasks, limit"),
    (["quantize: {bits: 4}"], "stage: []\n", "r.yaml:4: unknown key 'stage'; valid: model, stages, eval, bench"),
    (["quantize: {bits: 4"], "", "r.yaml:4 is not YAML"),
])
def test_bad_recipe_is_one_line_naming_file_and_line_and_starts_nothing(tiny_folder, tmp_path, capsys, stages,
                                                                        extra, message):
    recipe = _recipe(tmp_path, tiny_folder, stages, extra)
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("compress: error: recipe ") and message in err[0], err
    assert not out.exists()


def test_missing_model_and_options_beside_a_recipe_are_refused(tmp_path, capsys):
    recipe = _recipe(tmp_path, tmp_path / "nowhere", ["quantize: {bits: 4}"])
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert "r.yaml:1: model path" in capsys.readouterr().err
    assert main(["run", str(recipe), "--bits", "4", "--out", str(tmp_path / "out")]) == 2
    assert "carries the settings" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_resolved_recipe_reads_back_to_the_same_configs(tiny_folder, tmp_path):
    import yaml

    from compress.recipes.execute import resolved_yaml
    from compress.recipes.spec import load_recipe, parse_recipe

    recipe = load_recipe(_recipe(tmp_path, tiny_folder, [f"finetune: {FT}", "remove: {skip: 0.25}",
                                                         "quantize: {bits: mixed, avg_bits: 4, bit_choices: '2,4,8'}"],
                                 "eval: {tasks: [arc_easy], limit: 5}\nbench: {}\n"))
    again = parse_recipe(yaml.safe_load(resolved_yaml(recipe)))
    assert [s.config for s in again.stages] == [s.config for s in recipe.stages] and again.finish == recipe.finish
    assert recipe.stages[2].config.bits.bit_choices == (2, 4, 8) and recipe.stages[1].config.bits.bits == "16"
    assert recipe.stages[1].config.depth.skip == 0.25 and recipe.stages[0].config.merge


def _run(recipe: Path, out: Path, data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "COMPRESS_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "compress", "run", str(recipe), "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _weights(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.safetensors"))}


def test_killed_recipe_resumes_to_the_bytes_of_an_uninterrupted_run(tiny5, data_dir, tmp_path):
    long_ft = "{steps: 30, batch_size: 2, seq_len: 32, eval_every: 10, eval_windows: 2}"
    recipe = _recipe(tmp_path, tiny5, [f"finetune: {FT}", "remove: {skip_layers: [1], ppl_windows: 0}",
                                       f"heal: {long_ft[:-1]}, lora_rank: 4, lr_policy: llr}}"])
    whole = _run(recipe, tmp_path / "whole", data_dir)
    assert whole.wait(timeout=600) == 0, whole.stdout.read()

    killed = _run(recipe, tmp_path / "killed", data_dir)
    lock = tmp_path / "killed" / ".03-heal.lock"  # the heal stage has started training
    deadline = time.time() + 300
    while not lock.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "03-heal").exists()
    (tmp_path / "killed" / ".03-heal.tmp-left").mkdir()  # what a kill while saving leaves
    resumed = _run(recipe, tmp_path / "killed", data_dir)
    log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, log
    assert "[1/3] finetune" in log and "up to date" in log.split("[2/3]")[1].split("\n")[0]
    assert "removed 1 temporary folder(s) left by an interrupted run: .03-heal.tmp-left" in log
    assert _weights(tmp_path / "killed") == _weights(tmp_path / "whole")
    for name in ("01-finetune/train_log.json", "03-heal/train_log.json"):
        a, b = (json.loads((tmp_path / d / name).read_text()) for d in ("killed", "whole"))
        assert a["eval"] == b["eval"] and a["train_loss"] == b["train_loss"]


def test_recipe_chains_stages_skips_what_is_current_and_reruns_from_a_change(tiny5, data_dir, tmp_path, gptqmodel):
    from compress import api

    stages = [f"finetune: {FT}", "remove: {skip_layers: [1], ppl_windows: 0}",
              "heal: {steps: 2, batch_size: 2, seq_len: 32, eval_every: 2, eval_windows: 2, lora_rank: 4}",
              "quantize: {bits: 4, group_size: 32, calib_samples: 4, calib_seq_len: 32, ppl_windows: 0}"]
    out = tmp_path / "out"
    first = api.recipe(_recipe(tmp_path, tiny5, stages), out=out, data_dir=data_dir, progress=False)
    assert [s["ran"] for s in first.stages] == [True] * 4 and first.final == out / "04-quantize"
    assert json.loads((out / "04-quantize" / "config.json").read_text())["quantization_config"]["bits"] == 4
    assert json.loads((out / "02-remove" / "config.json").read_text())["num_hidden_layers"] == 4
    fp = json.loads((out / "01-finetune" / "fingerprint.json").read_text())
    assert any(p.endswith("valid.txt") for p in fp["data"]) and fp["versions"]["torch"]
    assert (out / "recipe.yaml").is_file() and "04-quantize" in (out / "report.md").read_text()
    before = _weights(out)

    again = api.recipe(_recipe(tmp_path, tiny5, stages), out=out, data_dir=data_dir, progress=False)
    assert [s["ran"] for s in again.stages] == [False] * 4 and _weights(out) == before

    stages[2] = stages[2].replace("steps: 2", "steps: 3")
    changed = api.recipe(_recipe(tmp_path, tiny5, stages), out=out, data_dir=data_dir, progress=False)
    assert [s["ran"] for s in changed.stages] == [False, False, True, True]
    after = _weights(out)
    assert after["01-finetune/model.safetensors"] == before["01-finetune/model.safetensors"]
    assert after["03-heal/model.safetensors"] != before["03-heal/model.safetensors"]

    fresh = api.recipe(_recipe(tmp_path, tiny5, stages), out=tmp_path / "fresh", data_dir=data_dir, progress=False)
    assert _weights(fresh.out) == after  # same recipe, seed, machine: the same bytes, GPTQ included


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("pipelines/*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    from compress.recipes.spec import load_recipe

    recipe = load_recipe(path)
    assert recipe.stages[-1].name == "quantize" and set(recipe.finish) == {"eval", "bench"}


def test_qlora_heal_and_opt_rtn_stages_are_byte_identical_across_runs(tiny5, data_dir, tmp_path, gptqmodel):
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("auto_round")
    from compress import api

    stages = ["heal: {qlora: true, lora_rank: 4, steps: 2, batch_size: 2, seq_len: 32, eval_every: 2, "
              "eval_windows: 2}",
              "quantize: {bits: 4, group_size: 32, rounding: opt-rtn, calib_samples: 4, calib_seq_len: 32, "
              "ppl_windows: 0}"]
    runs = [api.recipe(_recipe(tmp_path, tiny5, stages), out=tmp_path / name, data_dir=data_dir, progress=False)
            for name in ("a", "b")]
    assert (tmp_path / "a" / "01-heal" / "adapter" / "adapter_model.safetensors").is_file()
    assert _weights(runs[0].out) == _weights(runs[1].out) and len(_weights(runs[0].out)) == 3
    stats = [json.loads((r.final / "stats.json").read_text()) for r in runs]
    assert stats[0]["method"] == "opt-rtn"
    assert {k: v for k, v in stats[0].items() if "seconds" not in k} == \
           {k: v for k, v in stats[1].items() if "seconds" not in k}
