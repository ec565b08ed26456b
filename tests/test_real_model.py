"""Integration tests on the real default model (SmolLM2-135M-Instruct, bundled GGUF) and real WikiText-2."""

from pathlib import Path

import pytest

from compress.cli import main
from compress.model import decoder_layers, load_model, resolve_model_path
from compress.scorers.outliers import outlier_scores
from compress.scorers.spectral import matrix_table

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smollm2():
    return load_model(None)


def test_default_model_loads_from_the_bundled_gguf_and_is_cached(smollm2):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert len(decoder_layers(model)) == 30
    cached = resolve_model_path(None)  # already converted: a plain safetensors folder in the user cache
    assert (Path(cached) / "model.safetensors").is_file()
    assert tokenizer.decode(tokenizer("The capital of France").input_ids) == "The capital of France"


def test_score_command_prints_a_30_layer_table(tmp_path, data_dir, capsys):
    out = tmp_path / "scores"
    assert main(["score", "--data-dir", str(data_dir), "--out", str(out), "--calib-samples", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "layer"
    assert [line.split()[0] for line in lines[1:31]] == [str(i) for i in range(30)]
    assert (out / "scores.png").stat().st_size > 10_000


def test_layer_11_down_proj_has_a_weight_30_std_out(smollm2):
    rows = outlier_scores(smollm2[0], progress=False).matrices
    row = next(r for r in rows if r["name"] == "model.layers.11.mlp.down_proj")
    assert row["max_abs_over_std"] == pytest.approx(30, abs=2)
    ranked = sorted(rows, key=lambda r: -r["max_abs_over_std"])
    assert row in ranked[:5]  # among the 5 most extreme of 210 matrices (layer 27 gate_proj is the largest)


def test_alpha_matches_weightwatcher(smollm2):
    from compress.parity import alpha_parity, weightwatcher_alphas

    ours = {r["name"]: r["alpha"] for r in matrix_table(smollm2[0], progress=False)}
    parity = alpha_parity(ours, weightwatcher_alphas(smollm2[0]))
    assert parity["matrices"] == 211  # 30 x 7 decoder Linears + lm_head
    assert parity["median_abs_diff"] <= 0.02


def test_wikitext2_perplexity_prefix(smollm2, data_dir):
    from compress.api import wikitext2_ppl

    result = wikitext2_ppl(*smollm2, seq_len=512, max_windows=2, data_dir=data_dir, progress=False)
    assert (result.seq_len, result.windows, result.tokens_scored) == (512, 2, 1022)
    assert result.windows_total > 500
    assert 5 < result.ppl < 60
