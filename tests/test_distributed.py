"""`compress finetune` (and a recipe's training stages) under `accelerate launch` with 2 CPU processes (gloo):
the same losses and weights as one process with the same global batch, within float tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no"]  # --multi_gpu = torchrun; on CPU, gloo


def _env(data_dir: Path) -> dict:
    return {**os.environ, "COMPRESS_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": ""}


def _python(args: list[str], data_dir: Path) -> str:
    done = subprocess.run([sys.executable, *args], env=_env(data_dir), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _compare(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    one, two = (json.loads((p / "train_log.json").read_text()) for p in (a, b))
    assert one["train_loss"] == pytest.approx(two["train_loss"], abs=1e-5)
    assert [e for _, e in one["eval"]] == pytest.approx([e for _, e in two["eval"]], abs=1e-5)
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    for name in x:
        torch.testing.assert_close(x[name], y[name], atol=1e-4, rtol=1e-4)


def test_finetune_under_accelerate_launch_matches_one_process(tiny5, data_dir, tmp_path):
    args = ["finetune", "--model", str(tiny5), "--steps", "4", "--batch-size", "4", "--seq-len", "32",
            "--eval-every", "2", "--lr", "5e-3"]
    one = _python(["-m", "compress", *args, "--out", str(tmp_path / "one")], data_dir)
    two = _python([*LAUNCH, "-m", "compress", *args, "--out", str(tmp_path / "two")], data_dir)
    assert two.count("wrote ") == 1 and "eval loss" in one  # only the main process reports and writes
    assert json.loads((tmp_path / "two" / "settings.json").read_text())["processes"] == 2
    _compare(tmp_path / "one", tmp_path / "two")


def test_recipe_training_stage_under_accelerate_launch(tiny5, data_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {tiny5}\nstages:\n  - remove: {{skip_layers: [1], ppl_windows: 0}}\n"
                      "  - heal: {steps: 3, batch_size: 4, seq_len: 32, eval_every: 3, eval_windows: 2, "
                      "lora_rank: 4, lr: 5.0e-3}\n")
    _python(["-m", "compress", "run", str(recipe), "--out", str(tmp_path / "one")], data_dir)
    two = _python([*LAUNCH, "-m", "compress", "run", str(recipe), "--out", str(tmp_path / "two")], data_dir)
    assert two.count("wrote ") == 1 and "[2/2] heal" in two
    assert json.loads((tmp_path / "two" / "02-heal" / "settings.json").read_text())["processes"] == 2
    _compare(tmp_path / "one" / "02-heal", tmp_path / "two" / "02-heal")
    again = _python([*LAUNCH, "-m", "compress", "run", str(recipe), "--out", str(tmp_path / "two")], data_dir)
    assert again.count("up to date (fingerprint") == 2 and again.count("wrote ") == 1
