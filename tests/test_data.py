import json

import pytest
import torch

from compress.data import (
    calibration_samples,
    calibration_texts,
    data_dir,
    detokenize_wikitext,
    wikitext2_rows,
    wikitext2_test_text,
)
from compress.errors import CompressError
from conftest import byte_tokenizer


def test_wikitext2_test_rows_match_the_hf_split(data_dir):
    rows = wikitext2_rows("test", data_dir)
    assert len(rows) == 4358  # HF wikitext-2-raw-v1 test has 4,358 rows
    assert rows[0] == "" and rows[1] == " = Robert Boulter = \n"
    text = wikitext2_test_text(data_dir)
    assert text.startswith("\n\n = Robert Boulter = \n\n\n")
    assert len(text) == sum(map(len, rows)) + 2 * (len(rows) - 1)


def test_default_calibration_is_not_the_test_split(data_dir):
    [calib] = calibration_texts(root=data_dir)
    test = wikitext2_test_text(data_dir)
    assert len(calib) > 1_000_000
    # the valid split shares no article with test: its first headline is not in the test text
    headline = next(line for line in calib.splitlines() if line.startswith(" = ") and line.strip().endswith("="))
    assert headline not in test
    assert " @-@ " not in calib  # detokenized


def test_boolq_passages(data_dir):
    texts = calibration_texts("boolq-passages", data_dir)
    assert len(texts) == 3270
    assert texts[0].startswith("All biomass goes through")


def test_refuses_to_calibrate_on_the_test_file(data_dir):
    for name in ("wiki.test.raw", "wikitext-2-raw-v1_document_level_test.jsonl", "tokenized/test.txt"):
        with pytest.raises(CompressError, match="evaluation text"):
            calibration_texts(str(data_dir / "wikitext2" / name))
    assert calibration_texts(str(data_dir / "wikitext2" / "tokenized" / "valid.txt"))  # the valid split is fine


def test_txt_and_jsonl_sources(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"id": 3, "text": "two"}) + "\n")
    assert calibration_texts(str(tmp_path / "a.txt")) == ["hello world"]
    assert calibration_texts(str(tmp_path / "b.jsonl")) == ["one", "two"]
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(CompressError, match="bad.jsonl:1 is not valid JSON"):
        calibration_texts(str(tmp_path / "bad.jsonl"))
    with pytest.raises(CompressError, match="does not exist"):
        calibration_texts(str(tmp_path / "missing.txt"))
    with pytest.raises(CompressError, match="unknown calibration source 'c4-en'"):
        calibration_texts("c4-en", tmp_path)


def test_calibration_samples_are_seeded():
    tok = byte_tokenizer()
    texts = ["The quick brown fox jumps over the lazy dog. " * 40]
    a = calibration_samples(tok, texts, n_samples=6, seq_len=32, seed=0)
    b = calibration_samples(tok, texts, n_samples=6, seq_len=32, seed=0)
    c = calibration_samples(tok, texts, n_samples=6, seq_len=32, seed=1)
    assert a.shape == (6, 32) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(CompressError, match="fewer than --calib-seq-len"):
        calibration_samples(tok, ["short"], n_samples=1, seq_len=32)


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(CompressError, match="does not exist"):
        data_dir(tmp_path / "x")
    with pytest.raises(CompressError, match="has no wikitext2/wiki.test.raw"):
        wikitext2_rows("test", tmp_path)
    monkeypatch.delenv("COMPRESS_DATA_DIR")
    assert data_dir() is None


def test_no_data_dir_offline_names_both_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CompressError, match="--data-dir DIR or set COMPRESS_DATA_DIR.*hub"):
        wikitext2_rows("test", None)


def test_detokenize():
    assert detokenize_wikitext("a @-@ b , c @,@ d ( e ) don 't it 's \n") == "a-b, c,d (e) don 't it's\n"
