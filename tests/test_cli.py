import json
import subprocess
import sys

import pytest

from compress.cli import main
from compress.scores import LayerScores


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_score_writes_every_output(tiny_folder, data_dir, tmp_path, capsys):
    out = tmp_path / "scores"
    code, stdout, _ = run(capsys, "score", "--model", str(tiny_folder), "--data-dir", str(data_dir), "--out",
                          str(out), "--calib-samples", "2", "--calib-seq-len", "32", "--angular-span", "2")
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["scores.csv", "scores.json", "scores.png", "settings.json"]
    table = LayerScores.from_dict(json.loads((out / "scores.json").read_text()))
    assert table.n_layers == 4 and {"alpha", "lim", "bi", "angular_2", "zd"} <= set(table.columns)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["calib"] == "wikitext2-valid" and settings["calib_samples"] == 2
    assert settings["settings"]["lim"] == {"max_span": 2, "batch_size": 4}  # defaults filled in
    assert settings["settings"]["alpha"]["min_eval"] == 1e-5
    assert settings["versions"]["torch"]
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["layer", "alpha↓", "alpha_median↓"]
    assert [line.split()[0] for line in lines[1:5]] == ["0", "1", "2", "3"]
    assert "largest outlier weight: model.layers." in stdout


def test_score_without_calibration_needs_no_data_dir(tiny_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COMPRESS_DATA_DIR", raising=False)
    code, stdout, _ = run(capsys, "score", "--model", str(tiny_folder), "--scorers", "alpha,zd", "--out",
                          str(tmp_path / "o"))
    assert code == 0 and "lim" not in stdout.splitlines()[0]


def one_line_error(capsys, *argv) -> str:
    code, stdout, err = run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("compress: error: ")
    return err


def test_bad_input_gives_one_line_and_exit_2(tiny_folder, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert "does not exist" in one_line_error(capsys, "score", "--model", str(tmp_path / "missing"), "--out", str(out))
    assert "unknown scorer 'nope'" in one_line_error(capsys, "score", "--model", str(tiny_folder), "--scorers",
                                                     "alpha,nope", "--out", str(out))
    empty = tmp_path / "empty-data"
    empty.mkdir()
    assert "has no wikitext2/tokenized/valid.txt" in one_line_error(
        capsys, "score", "--model", str(tiny_folder), "--data-dir", str(empty), "--out", str(out))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is not a folder" in one_line_error(capsys, "score", "--model", str(tiny_folder), "--out",
                                               str(blocker / "sub"))
    assert "cannot write" in one_line_error(capsys, "score", "--model", str(tiny_folder), "--scorers", "zd",
                                            "--out", "/proc/compress-test-out")
    assert not out.exists()  # nothing half-written


def test_not_a_causal_lm_is_one_line(tmp_path, capsys):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    assert "not a causal language model" in one_line_error(capsys, "score", "--model", str(tmp_path), "--scorers",
                                                           "zd", "--out", str(tmp_path / "o"))


def test_debug_shows_the_traceback(tmp_path):
    from compress.errors import CompressError

    with pytest.raises(CompressError):
        main(["score", "--model", str(tmp_path / "missing"), "--debug", "--out", str(tmp_path / "o")])


def test_ppl_prints_tokens_and_seq_len(tiny_folder, data_dir, tmp_path, capsys):
    out = tmp_path / "ppl.json"
    code, stdout, _ = run(capsys, "ppl", "--model", str(tiny_folder), "--data-dir", str(data_dir), "--seq-len", "64",
                          "--max-windows", "2", "--out", str(out))
    assert code == 0
    assert "tokens scored 126  seq_len 64  windows 2 (first 2 of" in stdout
    saved = json.loads(out.read_text())
    assert saved["windows"] == 2 and saved["seq_len"] == 64 and saved["ppl"] > 1


def test_option_errors_are_one_line_and_exit_2(capsys):
    assert "max_windows (--max-windows) must be >= 1, got 0" in one_line_error(capsys, "ppl", "--max-windows", "0")
    assert "--max-windows must be an int, got 'x'" in one_line_error(capsys, "ppl", "--max-windows", "x")
    assert "unrecognized arguments: --nope" in one_line_error(capsys, "ppl", "--nope")


def test_help_is_instant_and_imports_no_torch():
    code = ("import sys; from compress.cli import build_parser; build_parser().format_help(); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"
