"""`compress bench` and `compress report`: statistics, token timing, outputs and bad input."""

import importlib.machinery
import json
import math

import numpy as np
import pytest

from compress.benchmark.stats import bits_per_weight, generation_metrics, percentile, summarize
from compress.cli import main
from compress.errors import CompressError


def test_percentile_matches_numpy():
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_generation_metrics_from_token_times():
    # start at 0; first token after 0.5 s, then one every 0.1 s: 11 tokens end at 1.5 s
    times = [0.5 + 0.1 * k for k in range(11)]
    m = generation_metrics(times, 0.0, batch=4)
    assert m["ttft_ms"] == pytest.approx(500) and m["e2el_ms"] == pytest.approx(1500)
    assert m["tpot_ms"] == pytest.approx(100) and m["itl_ms"] == pytest.approx(100)
    assert m["output_throughput"] == pytest.approx(4 * 11 / 1.5)
    assert m["decode_throughput"] == pytest.approx(4 * 10 / 1.0)
    one = generation_metrics([0.2], 0.0, batch=1)
    assert math.isnan(one["tpot_ms"]) and one["e2el_ms"] == pytest.approx(200)
    s = summarize([{"e2el_ms": v, "ttft_ms": v / 10, "tpot_ms": 1.0} for v in (100.0, 200.0, 300.0)])
    assert s["median_e2el_ms"] == 200 and s["p90_e2el_ms"] == pytest.approx(280) and s["median_tpot_ms"] == 1.0
    assert "p90_tpot_ms" not in s


def test_bits_per_weight():
    assert bits_per_weight(2 * 1000, 1000) == 16
    with pytest.raises(ValueError):
        bits_per_weight(10, 0)


def test_timing_streamer_sees_every_new_token(tiny_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compress.benchmark.hf import TimingStreamer
    from compress.benchmark.measure import prompt_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    ids = prompt_ids(AutoTokenizer.from_pretrained(tiny_folder), batch=2, length=12, data_root=None)
    assert ids.shape == (2, 12)
    streamer = TimingStreamer()
    out = model.generate(input_ids=ids, max_new_tokens=6, min_new_tokens=6, do_sample=False, streamer=streamer,
                         pad_token_id=0)
    assert out.shape == (2, 18) and len(streamer.times) == 6 and streamer.times == sorted(streamer.times)


def test_bench_writes_json_markdown_and_plot_with_a_baseline(tiny_folder, data_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "bench"
    assert main(["bench", str(tiny_folder), "--baseline", str(tiny_folder), "--input-len", "16", "--output-len",
                 "4", "--batch-sizes", "1,2", "--repeats", "3", "--warmup", "1", "--device", "cpu",
                 "--data-dir", str(data_dir), "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert len(result["models"]) == 2 and result["settings"]["batches"] == [1, 2]
    model = result["models"][0]
    assert set(model["results"]) == {"batch_1", "batch_2"}
    row = model["results"]["batch_2"]
    assert len(row["runs"]) == 3 and row["median_ttft_ms"] < row["median_e2el_ms"] <= row["p99_e2el_ms"]
    assert row["median_output_throughput"] == pytest.approx(
        np.median([r["output_throughput"] for r in row["runs"]]))
    # in MiB: a process that imported torch peaks at hundreds of MiB, never KiB or TiB
    assert 100 < model["ram_before_load_mib"] <= model["peak_ram_mib"] < 64 * 1024
    size = model["size"]
    parameters = AutoModelForCausalLM.from_pretrained(tiny_folder).num_parameters()
    assert size["parameters"] == parameters
    assert size["weight_bytes"] == (tiny_folder / "model.safetensors").stat().st_size
    assert size["bits_per_weight"] == pytest.approx(32, rel=0.03)  # float32 + the header (large in a tiny file)
    text = (out / "bench.md").read_text()
    assert "| speed-up |" in text and text.count("| tiny") >= 4
    assert (out / "bench.png").stat().st_size > 5_000
    assert "TTFT" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "repeats (--repeats) must be >= 1, got 0"),
    (["--batch-sizes", "1,x"], "--batch-sizes must be a comma list"),
    (["--batch-sizes", "0"], "batches (--batch-sizes) must be >= 1, got 0"),
    (["--device", "tpu"], "unknown --device"),
    pytest.param(["--device", "cuda"], "torch sees no CUDA GPU",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")),
    (["--backend", "trt"], "backend (--backend) must be one of hf, vllm, llama.cpp; got trt"),
    (["--backend", "llama.cpp", "--device", "cuda"], "backend (--backend) llama.cpp is benched on CPU here"),
    pytest.param(["--backend", "llama.cpp"], "llama-cpp-python is not installed",
                 marks=pytest.mark.skipif(__import__("importlib").util.find_spec("llama_cpp") is not None,
                                          reason="llama-cpp-python is installed")),
    pytest.param(["--backend", "llama.cpp"], "needs a .gguf file or a `compress run --target llama.cpp` folder",
                 marks=pytest.mark.skipif(__import__("importlib").util.find_spec("llama_cpp") is None,
                                          reason="llama-cpp-python is not installed")),
    pytest.param(["--backend", "vllm"], "vllm is not installed",
                 marks=pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is not None,
                                          reason="vllm is installed")),
])
def test_bad_bench_input_is_one_line(tiny_folder, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["bench", str(tiny_folder), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().splitlines()[-1].startswith("compress: error:")
    assert not out.exists()


def test_bench_of_a_missing_model_is_one_line(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_bench_workers_peak_ram_is_its_own_not_that_of_the_process_that_started_it():
    """A recipe benches after lm-eval grew its process to ~18 GiB: the worker it starts (fork + execve, as
    bench_in_subprocess) must report its own peak, which ru_maxrss does not on Linux."""
    import subprocess
    import sys

    held = bytearray(2 << 30)  # 2 GiB, every page touched so it is resident
    held[::4096] = b"\x01" * len(held[::4096])
    code = "from compress.benchmark.measure import peak_rss_mib; print(peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 5 < child < 1024 and len(held) == 2 << 30


def test_report_of_a_run_with_eval_and_bench(tiny5, data_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["run", "--model", str(tiny5), "--data-dir", str(data_dir), "--calib-samples", "8",
                 "--calib-seq-len", "64", "--skip-layers", "1,3", "--bits", "16", "--max-windows", "1",
                 "--out", str(run)]) == 0
    assert main(["eval", str(run), "--baseline", str(tiny5), "--tasks", "arc_easy,wikitext", "--limit", "3",
                 "--data-dir", str(data_dir)]) == 0
    assert main(["bench", str(run), "--input-len", "8", "--output-len", "3", "--batch-sizes", "1",
                 "--repeats", "2", "--warmup", "0", "--device", "cpu"]) == 0
    other = tmp_path / "other"
    other.mkdir()
    assert main(["report", str(run), str(other)]) == 0
    text = (run / "report.md").read_text()
    layer_rows = [line for line in text.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert len(layer_rows) == 2 and all("| yes |" in line for line in layer_rows)  # removed layers marked
    table = text.split("| layer |")[1].split("\n\n")[0].splitlines()  # header rest, separator, one row a layer
    assert len({("| layer |" + table[0]).count("|")} | {line.count("|") for line in table[1:]}) == 1
    assert "arc_easy" in text and "recovery" in text and "TTFT p50 ms" in text
    assert "No plan.json" in text and "No eval.json: run `compress eval" in text  # the bare folder
    assert (run / "layers-run.png").stat().st_size > 5_000
    recovered = json.loads((run / "eval.json").read_text())["recovery"]["wikitext"]
    assert recovered > 0  # a perplexity always has a recovery, so the run has a point on the trade-off plot
    assert (run / "tradeoff.png").stat().st_size > 5_000 and "![quality vs size vs speed](tradeoff.png)" in text


def test_report_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_bench_config_rejects_bad_values():
    from compress.benchmark.config import BenchConfig

    with pytest.raises(CompressError, match="--warmup"):
        BenchConfig(warmup=-1)


def test_float_parameters_count_a_tied_head_once(tmp_path):
    from compress.benchmark.measure import float_parameters
    from conftest import tiny_model

    model = tiny_model("llama", tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path / "tied")
    assert float_parameters(tmp_path / "tied") == model.num_parameters()


def test_batch_call_metrics_agree_with_token_timed_metrics():
    from compress.benchmark.stats import batch_call_metrics

    start, ttft, tpot, n, batch = 100.0, 0.05, 0.01, 128, 8
    times = [start + ttft + k * tpot for k in range(n)]  # evenly spaced tokens after the prefill
    streamed = generation_metrics(times, start, batch)
    whole = batch_call_metrics(times[-1] - start, ttft, batch, n)
    assert whole == pytest.approx(streamed)
    assert whole["tpot_ms"] == pytest.approx(10.0) and whole["output_throughput"] == pytest.approx(8 * 128 / 1.32)
    assert math.isnan(batch_call_metrics(0.2, 0.2, 1, 1)["tpot_ms"])  # one token: no decode phase
    with pytest.raises(ValueError):
        batch_call_metrics(0.0, 0.1, 1, 4)


def test_vllm_worker_plumbing_against_a_stand_in_engine(tiny_folder, data_dir, tmp_path, monkeypatch):
    """vllm needs a CUDA GPU, absent here: this runs compress.benchmark.vllm.worker against a stand-in `vllm`
    module with vLLM's offline API (LLM.generate(prompts, SamplingParams, use_tqdm) -> outputs[0].token_ids)
    to check what compress does around the engine: the prompts it sends, the calls it times, the record it
    builds and the table made from it. The engine's own numbers need a GPU run."""
    import sys
    import types

    import torch

    from compress.benchmark.config import BenchConfig
    from compress.benchmark.tables import markdown
    from compress.benchmark.vllm import worker

    calls = []
    clock = [100.0]  # a stand-in clock (s): the engine's time passes only when it "computes", never on a busy CPU

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class LLM:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(dtype="torch.float16",
                                                                                       quantization=None))
            calls.append(("init", kwargs))

        def generate(self, prompts, params, use_tqdm=True):
            calls.append(("generate", len(prompts), params.max_tokens, {len(p["prompt_token_ids"]) for p in prompts}))
            clock[0] += 0.02 * params.max_tokens  # a prefill and every further token take 20 ms
            done = types.SimpleNamespace(token_ids=list(range(params.max_tokens)))
            return [types.SimpleNamespace(outputs=[done]) for _ in prompts]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams, fake.__version__ = LLM, SamplingParams, "stand-in"
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    platforms = types.ModuleType("vllm.platforms")  # a CUDA build's platform
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: False, device_type="cuda")
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "stand-in GPU")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3 * 2**20)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    import compress.benchmark.vllm as vllm_worker

    monkeypatch.setattr(vllm_worker, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    from compress.benchmark.vllm import check_vllm
    from compress.errors import CompressError

    with pytest.raises(CompressError, match="this vllm build runs on CUDA; drop device cpu"):
        check_vllm(str(tiny_folder), "cpu")
    config = BenchConfig(input_len=16, output_len=4, batches=(1, 3), repeats=2, warmup=1, backend="vllm")
    record = worker(str(tiny_folder), config, data_dir, False)

    init = calls[0][1]
    assert init["model"] == str(tiny_folder) and init["enable_prefix_caching"] is False
    assert init["max_model_len"] == 20 and init["max_num_seqs"] == 3
    generated = [c[1:] for c in calls[1:]]  # (prompts, max_tokens, prompt lengths) per timed call
    assert generated == [(1, 1, {16})] * 3 + [(1, 4, {16})] * 3 + [(3, 1, {16})] * 3 + [(3, 4, {16})] * 3
    assert list(record["results"]) == ["batch_1", "batch_3"]
    for row in record["results"].values():
        assert len(row["runs"]) == 2 and row["prefill_ms"] == pytest.approx(20) and row["median_e2el_ms"] == \
            pytest.approx(80)  # one new token: the prefill; four: prefill + 3 more
        assert row["median_tpot_ms"] == pytest.approx(20) and row["median_ttft_ms"] == pytest.approx(20)
        assert row["median_output_throughput"] == pytest.approx(row["batch"] * 4 / 0.08)
    assert record["device"] == "cuda (stand-in GPU)" and record["peak_vram_mib"] == 3.0
    assert record["vllm"]["version"] == "stand-in" and record["vllm"]["dtype"] == "torch.float16"
    record.update(label="tiny", size={"weight_bytes": 2**20, "bits_per_weight": 16.0, "parameters": 10**6})
    table = markdown({"models": [record], "settings": {**config.__dict__}, "backend": "vllm",
                      "versions": {"torch": "x"}, "data": "WikiText-2 test windows"})
    assert "vllm backend, cuda (stand-in GPU)" in table and "TPOT = (e2e - TTFT) / (output - 1)" in table
    assert "| tiny | 3 |" in table

