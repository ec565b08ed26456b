"""The bad-input contract, case by case: every bad model, file, prompt, folder and setting a user can hand any
command gives exit 2, exactly one line on stderr ("compress: error: ..." naming the problem), no traceback, and
nothing at --out. Cheap fixtures (a tiny model and damaged copies of it), run in-process through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import byte_tokenizer, tiny_model

from compress.cli import main


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """One folder of bad inputs beside a good tiny model ("tiny"), built once for the module."""
    return build_bad_inputs(tmp_path_factory.mktemp("bad"))


def build_bad_inputs(root: Path) -> Path:
    """The bad inputs of CASES under `root` (also used by eval/bad_inputs.py to count, before and after)."""
    from safetensors.torch import load_file, save_file

    good = root / "tiny"
    tiny_model("llama").save_pretrained(good)
    byte_tokenizer().save_pretrained(good)
    weights = load_file(good / "model.safetensors")

    def copy(name: str) -> Path:
        shutil.copytree(good, root / name)
        return root / name

    data = (good / "model.safetensors").read_bytes()
    (copy("truncated") / "model.safetensors").write_bytes(data[: len(data) // 2])
    (copy("garbage") / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    missing = {k: v for k, v in weights.items() if k != "model.layers.1.mlp.down_proj.weight"}
    save_file(missing, copy("missing-key") / "model.safetensors", metadata={"format": "pt"})
    extra = {**weights, "model.layers.9.extra.weight": weights["model.norm.weight"].clone()}
    save_file(extra, copy("unexpected-key") / "model.safetensors", metadata={"format": "pt"})
    wrong = dict(weights)
    wrong["model.norm.weight"] = wrong["model.norm.weight"][:16].clone()
    save_file(wrong, copy("wrong-shape") / "model.safetensors", metadata={"format": "pt"})
    (copy("pickle-only") / "model.safetensors").rename(root / "pickle-only" / "pytorch_model.bin")
    (copy("no-weights") / "model.safetensors").unlink()
    gptq = copy("gptq-no-weights")
    (gptq / "model.safetensors").unlink()
    config = json.loads((gptq / "config.json").read_text())
    (gptq / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gptq",
                                                                                     "bits": 4}}))
    (copy("bad-config") / "config.json").write_text("{not json")
    _other_families(root)
    (root / "not.gguf").write_bytes(b"PK\x03\x04 this is a zip, not gguf")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait, ".encode("latin-1") * 50)
    (root / "empty.txt").write_text("  \n")
    (root / "no-text.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    (root / "int-text.jsonl").write_text(json.dumps({"text": 3}) + "\n")
    (root / "plan-shape.json").write_text(json.dumps({"layers": []}))
    (root / "plan-types.json").write_text(json.dumps({"format": 1, "layers": [{"index": 0, "bits": "4"}]}))
    (root / "plan-rows.json").write_text(json.dumps({"format": 1, "layers": [[0, 4]]}))
    (root / "plan-3bit.json").write_text(json.dumps({"format": 1, "layers": [{"index": i, "bits": 3} for i in range(4)]}))
    for name, record in (("eval-corrupt", "eval.json"), ("bench-corrupt", "bench.json"),
                         ("stats-corrupt", "stats.json")):
        (root / name).mkdir()
        (root / name / record).write_text('{"tasks": {')
    (root / "eval-shape").mkdir()
    (root / "eval-shape" / "eval.json").write_text(json.dumps({"tasks": [1, 2]}))
    evalcopy = copy("model-with-corrupt-eval")
    (evalcopy / "eval.json").write_bytes(b"\xff\xfe garbage")
    return root


def _other_families(root: Path) -> None:
    import transformers as tf

    bert = tf.BertForMaskedLM(tf.BertConfig(vocab_size=256, hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(root / "bert")
    t5 = tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                                   num_heads=2))
    t5.save_pretrained(root / "t5")
    for name in ("bert", "t5"):
        byte_tokenizer().save_pretrained(root / name)


M = "{root}/tiny"
# (case id, argv with {root} and {out}, expected fragment of the one line)
CASES = [
    # 1. model folders, the same way in every command
    ("truncated-ppl", ["ppl", "--model", "{root}/truncated"], "is truncated"),
    ("truncated-score", ["score", "--model", "{root}/truncated", "--scorers", "zd", "--out", "{out}"], "is truncated"),
    ("garbage-eval", ["eval", "{root}/garbage", "--out", "{out}"], "damaged"),
    ("not-gguf-run", ["run", "--model", "{root}/not.gguf", "--out", "{out}"], "is not a GGUF file"),
    ("not-gguf-generate", ["generate", "--model", "{root}/not.gguf", "hi"], "is not a GGUF file"),
    ("gptq-no-weights-eval", ["eval", "{root}/gptq-no-weights", "--out", "{out}"], "has no weights"),
    ("gptq-no-weights-bench", ["bench", "{root}/gptq-no-weights", "--out", "{out}"], "has no weights"),
    ("no-weights-finetune", ["finetune", "--model", "{root}/no-weights", "--out", "{out}"], "has no weights"),
    ("pickle-only-ppl", ["ppl", "--model", "{root}/pickle-only"], "safetensors only and never unpickles"),
    ("pickle-only-run", ["run", "--model", "{root}/pickle-only", "--out", "{out}"], "never unpickles"),
    ("bad-config-score", ["score", "--model", "{root}/bad-config", "--out", "{out}"], "config.json is not valid JSON"),
    ("bert-ppl", ["ppl", "--model", "{root}/bert"], "not a causal language model"),
    ("bert-eval", ["eval", "{root}/bert", "--out", "{out}"], "not a causal language model"),
    ("bert-bench", ["bench", "{root}/bert", "--out", "{out}"], "not a causal language model"),
    ("bert-finetune", ["finetune", "--model", "{root}/bert", "--out", "{out}"], "not a causal language model"),
    ("t5-generate", ["generate", "--model", "{root}/t5", "hi"], "encoder-decoder"),
    ("missing-key-ppl", ["ppl", "--model", "{root}/missing-key", "--max-windows", "1"], "1 weight(s) missing"),
    ("missing-key-run", ["run", "--model", "{root}/missing-key", "--bits", "16", "--max-windows", "0",
                         "--calib-samples", "1", "--calib-seq-len", "16", "--out", "{out}"], "weight(s) missing"),
    ("missing-key-score", ["score", "--model", "{root}/missing-key", "--scorers", "zd", "--out", "{out}"],
     "weight(s) missing"),
    ("missing-key-qlora", ["finetune", "--model", "{root}/missing-key", "--qlora", "--steps", "1", "--out",
                           "{out}"], "weight(s) missing"),
    ("unexpected-key-eval", ["eval", "{root}/unexpected-key", "--tasks", "arc_easy", "--limit", "1", "--out",
                             "{out}"], "unexpected"),
    ("wrong-shape-ppl", ["ppl", "--model", "{root}/wrong-shape"], "cannot load model"),
    ("model-is-a-file", ["ppl", "--model", "{root}/empty.txt"], "is a file, not a model folder"),
    # 2. text and plan files
    ("calib-latin1", ["run", "--model", M, "--calib", "{root}/latin1.txt", "--out", "{out}"], "is not UTF-8"),
    ("calib-empty", ["score", "--model", M, "--calib", "{root}/empty.txt", "--out", "{out}"], "is empty"),
    ("calib-no-text", ["run", "--model", M, "--calib", "{root}/no-text.jsonl", "--out", "{out}"],
     "no-text.jsonl:2 needs a string 'text' field, found missing"),
    ("calib-int-text", ["score", "--model", M, "--calib", "{root}/int-text.jsonl", "--out", "{out}"],
     "int-text.jsonl:1 needs a string 'text' field, found a number"),
    ("plan-shape", ["run", "--model", M, "--plan", "{root}/plan-shape.json", "--out", "{out}"],
     'must be {"format": 1'),
    ("plan-types", ["run", "--model", M, "--plan", "{root}/plan-types.json", "--out", "{out}"],
     "bits must be int"),
    ("plan-rows", ["run", "--model", M, "--plan", "{root}/plan-rows.json", "--out", "{out}"], "must be an object"),
    ("plan-not-utf8", ["run", "--model", M, "--plan", "{root}/latin1.txt", "--out", "{out}"], "is not UTF-8"),
    ("report-eval-corrupt", ["report", "{root}/eval-corrupt", "--out", "{out}"], "eval.json"),
    ("report-bench-corrupt", ["report", "{root}/bench-corrupt", "--out", "{out}"], "bench.json"),
    ("report-stats-corrupt", ["report", "{root}/stats-corrupt", "--out", "{out}"], "stats.json"),
    ("report-eval-shape", ["report", "{root}/eval-shape", "--out", "{out}"], "'tasks' must be a object"),
    ("eval-reads-corrupt-eval", ["eval", "{root}/model-with-corrupt-eval", "--tasks", "arc_easy", "--out",
                                 "{out}"], "is not UTF-8"),
    # 3. prompts
    ("prompt-empty", ["generate", "--model", M, "  "], "the prompt is empty"),
    ("prompt-undecodable", ["generate", "--model", M, "ab\udcffc"], "not valid UTF-8"),
    ("prompt-too-long", ["generate", "--model", M, "x" * 300], "passes the model's context of 128"),
    ("bench-input-len", ["bench", M, "--input-len", "200", "--out", "{out}"], "passes the context"),
    # 4. serving targets (issue 16): refused before anything is quantized
    ("target-unknown", ["run", "--model", M, "--target", "tgi", "--out", "{out}"], "must be one of"),
    ("target-vllm-cpu-3bit", ["run", "--model", M, "--target", "vllm-cpu", "--bits", "3", "--out", "{out}"],
     "vllm-cpu loads no 3-bit weights"),
    ("target-transformers-mixed", ["run", "--model", M, "--target", "transformers", "--bits", "mixed", "--out",
                                   "{out}"], "one option for the whole checkpoint"),
    ("target-llama-folder", ["run", "--model", M, "--target", "llama.cpp", "--out", "{out}"], "convert_hf_to_gguf"),
    ("target-plan-refused", ["run", "--model", M, "--target", "vllm", "--plan", "{root}/plan-3bit.json",
                             "--calib-samples", "2", "--calib-seq-len", "16", "--max-windows", "0", "--out",
                             "{out}"], "vllm cannot load this plan: unit 0.qkv 3b-g32: vllm computes 4-bit sym, 8-bit sym only"),
    # 5. preflight
    ("preflight-run-ram", ["run", "--model", M, "--bits", "4", "--calib-samples", "100000000", "--out", "{out}"],
     "lower --calib-samples to"),
    ("preflight-finetune-ram", ["finetune", "--model", M, "--batch-size", "10000000", "--out", "{out}"],
     "lower --batch-size to"),
]


def one_line(capfd, argv: list[str]) -> str:
    code = main(argv)
    err = capfd.readouterr().err
    # a run that got past its preflight has printed that line first (its own, not library noise)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("compress: preflight: ")]
    assert code == 2, f"exit {code}, stderr: {err[-800:]}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("compress: error: "), err[-800:]
    return lines[0]


@pytest.mark.parametrize("case,argv,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(bad, tmp_path, capfd, data_dir, case, argv, fragment):
    out = tmp_path / "out"
    argv = [a.format(root=bad, out=out) for a in argv] + ["--data-dir", str(data_dir)] * (argv[0] != "report")
    assert fragment in one_line(capfd, argv)
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir()], "something was left beside --out"
