"""`compress run --skip`: layers removed first, bits planned on the rest, one folder with plan.json."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from compress.cli import main
from compress.model import decoder_layers
from compress.depth.choose import choose_layers
from conftest import tiny_model
from test_removal import IDS, bypassed_logits


def _run(tiny5, data_dir, out, *argv):
    return main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--calib-samples", "8",
                 "--calib-seq-len", "64", "--rounding", "gptq", "--out", str(out), *argv])  # GPTQModel's layer rules


def test_skip_only_saves_an_ordinary_smaller_checkpoint(tiny5, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(tiny5, data_dir, out, "--skip", "0.4", "--skip-policy", "bi", "--bits", "16",
                "--max-windows", "1") == 0
    plan = json.loads((out / "plan.json").read_text())["layers"]
    removed = [row["index"] for row in plan if row["skip"]]
    assert len(plan) == 5 and len(removed) == 2  # round(0.4 * 5)
    assert all(row["bits"] == 16 for row in plan) and all(row["reason"].startswith("bi ") for row in plan
                                                             if row["skip"])
    skip_scores = json.loads((out / "skip_scores.json").read_text())
    bi = skip_scores["columns"]["bi"]
    assert max(bi[i] for i in removed) <= min(bi[i] for i in range(5) if i not in removed)  # ShortGPT
    stats = json.loads((out / "stats.json").read_text())
    assert stats["layers"] == {"before": 5, "after": 3, "removed": removed} and stats["method"] == "none"
    assert stats["ppl_after"]["ppl"] > 1
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    assert again.config.num_hidden_layers == 3
    original = AutoModelForCausalLM.from_pretrained(tiny5).eval()
    with torch.no_grad():
        assert torch.allclose(again(IDS, use_cache=False).logits, bypassed_logits(original, removed), atol=1e-5)
    printed = capsys.readouterr().out
    assert f"removed 2 of 5 layers: {removed}" in printed

    # the plan repeats the run
    repeat = tmp_path / "repeat"
    assert _run(tiny5, data_dir, repeat, "--plan", str(out / "plan.json"), "--max-windows", "0") == 0
    assert json.loads((repeat / "stats.json").read_text())["layers"]["removed"] == removed


def test_skip_then_mixed_bits_on_the_remaining_layers(gptqmodel, tiny5, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(tiny5, data_dir, out, "--skip", "0.4", "--skip-policy", "uls", "--avg-bits", "3.4",
                "--allocator", "layers", "--max-windows", "1") == 0
    plan = json.loads((out / "plan.json").read_text())["layers"]
    assert [row["index"] for row in plan if row["skip"]] == [1, 3]  # uls: first and last kept, spread evenly
    kept_bits = [row["bits"] for row in plan if not row["skip"]]
    assert sorted(kept_bits) == [2, 4, 4]  # the 3 remaining layers average <= 3.4 bits: one at 2
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 3
    dynamic = config["quantization_config"]["dynamic"]  # addresses the layers of the saved (reduced) model
    low = kept_bits.index(2)
    assert list(dynamic.values()) == [{"bits": 2}] and f"layers\\.{low}\\." in next(iter(dynamic))
    scores = json.loads((out / "scores.json").read_text())
    assert scores["n_layers"] == 3  # the bit plan's scores are of the layers that remain
    assert not (out / "removed-layers-fp").exists()
    from compress.model import load_gptq

    model, _ = load_gptq(out)
    assert len(decoder_layers(model)) == 3
    stats = json.loads((out / "stats.json").read_text())
    assert stats["method"] == "gptq" and stats["ppl_after"]["ppl"] > 1
    # the quantized, reduced folder generates, also with decode-time skipping on top
    assert main(["generate", "--model", str(out), "abc", "--max-new-tokens", "3", "--decode-skip", "0.4"]) == 0
    assert "3 new tokens" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--skip", "1"], "in [0, 1)"),
    (["--skip", "-0.1"], "in [0, 1)"),
    (["--skip", "0.95"], "cannot remove 5 of 5 layers"),
    (["--skip-layers", "0,1,2,3,4"], "cannot remove all 5 layers"),
    (["--skip-layers", "1,1"], "duplicate"),
    (["--skip-layers", "7"], "out of range"),
    (["--skip-layers", "1,x"], "--skip-layers must be a comma list of ints"),
    (["--skip", "0.2", "--skip-layers", "1"], "not both"),
    (["--skip", "0.2", "--skip-policy", "magic"], "valid: bi, angular, uls, greedy, random"),
    (["--skip", "0.7", "--skip-policy", "uls"], "at most 3 of 5"),
    (["--skip", "0.2", "--plan", "plan.json"], "plan (--plan) already says"),
])
def test_bad_skip_input_is_one_line_and_writes_nothing(tiny5, data_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert _run(tiny5, data_dir, out, "--bits", "16", *argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "tiny5"]


def test_policies_on_a_model(data_dir):
    """Each policy's choice on a tiny model: angular is a contiguous run at the smallest distance, greedy
    records the calibration loss of each step, its first step being the best single removal."""
    model = tiny_model("llama", num_hidden_layers=6)
    calib = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    angular = choose_layers(model, "angular", 2, calib, progress=False)
    distance = angular.scores["angular_2"][:5]
    start = angular.dropped[0]
    assert angular.dropped == [start, start + 1] and distance[start] == min(distance)
    greedy = choose_layers(model, "greedy", 2, calib, progress=False)
    assert [layer for layer, _ in greedy.trace] and sorted(l for l, _ in greedy.trace) == greedy.dropped
    from compress.evaluation.perplexity import calibration_nll
    from compress.depth.bypass import bypassing

    def loss(dropped):
        with bypassing(model, dropped, mode="always"):
            return calibration_nll(model, calib)

    assert greedy.trace[-1][1] == pytest.approx(loss(greedy.dropped), abs=1e-5)
    first, first_loss = greedy.trace[0]  # step 1 is the best single layer to remove
    assert first_loss == pytest.approx(min(loss([i]) for i in range(6)), abs=1e-6) and first_loss == \
        pytest.approx(loss([first]), abs=1e-6)
    assert choose_layers(model, "uls", 2).dropped == [1, 3]  # reference pattern: L = 6, R = 4, step 2
    assert choose_layers(model, "random", 2, seed=3).dropped == choose_layers(model, "random", 2, seed=3).dropped
    assert choose_layers(model, "bi", 0, calib).dropped == []


def test_generate_with_decode_time_skipping(tiny_folder, capsys):
    from compress import GenerateConfig, generate
    from compress.depth.bypass import bypassing

    assert main(["generate", "--model", str(tiny_folder), "hello", "--max-new-tokens", "5",
                 "--decode-skip", "0.25"]) == 0
    err = capsys.readouterr().err
    assert "5 new tokens" in err and "layers [1] skipped while decoding" in err  # ULS pattern, L = 4
    model = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    result = generate(model, GenerateConfig(max_new_tokens=5, skip_layers=(2,)), prompt="hello", tokenizer=tokenizer)
    ids = tokenizer("hello", return_tensors="pt").input_ids
    with bypassing(model, [2], mode="decode"), torch.no_grad():
        want = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert result.text == tokenizer.decode(want[0, ids.shape[1]:], skip_special_tokens=True)
    for argv, message in [(["--decode-skip", "1"], "in [0, 1)"), (["--skip-layers", "0,1,2,3"], "all 4"),
                          (["--decode-skip", "0.5", "--skip-layers", "1"], "not both"),
                          (["--skip-layers", "0"], "layer 0 must be kept")]:
        assert main(["generate", "--model", str(tiny_folder), "hi", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().splitlines()[-1].startswith("compress: error:")
