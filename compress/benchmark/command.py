"""`compress bench`: each model (and a baseline) benched in its own Python process, so its peak RAM is its own;
then bench.json, bench.md and bench.png. The worker is compress.benchmark.hf (transformers), .vllm or .llamacpp.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from compress.benchmark.config import BenchConfig
from compress.benchmark.measure import checkpoint_size
from compress.benchmark.tables import markdown, plot
from compress.errors import CompressError


@dataclass(frozen=True)
class BenchResult:
    """What `compress bench` measured; `to_dict()` is bench.json."""

    models: list[dict]  # per model: label, device, load_s, results {batch_<B>: metrics}, peak_ram_mib, size
    settings: dict
    backend: str
    versions: dict
    data: str

    def to_dict(self) -> dict:
        return asdict(self)


BENCH_FILES = ("bench.json", "bench.md", "bench.png")


def run_bench(model_spec: str | None, config: BenchConfig = BenchConfig(), baseline: str | None = None,
              data_dir=None, out: Path | None = None, trust_remote_code: bool = False, label: str | None = None,
              baseline_label: str | None = None, overwrite: bool = False) -> BenchResult:
    """`compress bench`: the model's record (and the baseline's), also written as bench.json / bench.md /
    bench.png into `out` (default: the model folder, or runs/bench-<model>)."""
    from compress.data import data_dir as resolve_data_dir
    from compress.model import check_model_spec, resolve_device
    from compress.outputs import claim_output, default_out, model_slug, write_folder
    from compress.provenance import versions

    root = resolve_data_dir(data_dir)
    resolve_device(config.device)  # a GPU asked for where there is none: refused before anything runs
    specs = [(model_spec, label)] + ([(baseline, baseline_label)] if baseline is not None else [])
    for spec, _ in specs:
        if config.backend == "llama.cpp":  # a .gguf or a GGUF folder: llama.cpp reads its own metadata
            from compress.benchmark.llamacpp import check_llamacpp

            check_llamacpp(spec, config)
            continue
        check_model_spec(spec)
        if config.backend == "vllm":
            from compress.benchmark.vllm import check_vllm

            check_vllm(spec, config.device)
        check_context(spec, config, trust_remote_code)
    out = claim_output(Path(out) if out else default_out(model_spec, "bench"), overwrite=overwrite,
                       records=BENCH_FILES)
    if config.backend == "hf":
        from compress.model.preflight import check_forward

        length = config.input_len + config.output_len
        runs = (config.warmup + config.repeats) * sum(config.batches) * length
        for spec, _ in specs:
            check_forward("bench", spec, out, resolve_device(config.device), batch=max(config.batches),
                          tokens=length, total_tokens=runs, batch_flag="--batch-sizes")
    models = []
    for spec, name in specs:
        record = bench_in_subprocess(spec, config, root, trust_remote_code)
        if config.backend == "llama.cpp":
            from compress.benchmark.llamacpp import gguf_size

            size = gguf_size(spec)
        else:
            size = checkpoint_size(spec)
        record.update(label=name or model_slug(spec), size=size)
        models.append(record)
    result = {"models": models, "settings": asdict(config), "backend": config.backend, "versions": versions(),
              "data": "WikiText-2 test windows" if root else "fixed fallback text"}
    write_folder(out, {"bench.json": json.dumps(result, indent=1) + "\n", "bench.md": markdown(result),
                       "bench.png": lambda path: plot(result, path)})
    return BenchResult(**result)


def check_context(spec: str | None, config: BenchConfig, trust_remote_code: bool) -> None:
    """input_len + output_len must fit the model's context: refused before any model loads."""
    from compress.config import invalid
    from compress.model import context_length

    context = context_length(spec, trust_remote_code)
    if context is not None and config.input_len + config.output_len > context:
        raise invalid(config, "input_len", f"{config.input_len} + output_len {config.output_len} passes the "
                      f"context of {spec or 'the bundled model'} ({context} tokens): lower them")


def bench_in_subprocess(spec: str | None, config: BenchConfig, data_root: Path | None,
                        trust_remote_code: bool) -> dict:
    """Run `worker` in a fresh interpreter (own peak RSS, no memory of the previous model)."""
    payload = json.dumps({"spec": spec, "config": asdict(config), "data_root": str(data_root) if data_root else None,
                          "trust_remote_code": trust_remote_code})
    proc = subprocess.run([sys.executable, "-m", "compress.benchmark.command", payload], stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise CompressError(f"benchmarking {spec or 'the default model'} failed (exit {proc.returncode}); "
                            f"its error is above")
    return json.loads(lines[-1])


def _main() -> int:
    """Worker entry (`python -m compress.benchmark.command PAYLOAD`): the record as the last stdout line."""
    args = json.loads(sys.argv[1])
    config = BenchConfig(**{**args["config"], "batches": tuple(args["config"]["batches"])})
    if config.backend == "vllm":
        from compress.benchmark.vllm import worker as run
    elif config.backend == "llama.cpp":
        from compress.benchmark.llamacpp import worker as run
    else:
        from compress.benchmark.hf import worker as run
    try:
        record = run(args["spec"], config, Path(args["data_root"]) if args["data_root"] else None,
                     args["trust_remote_code"])
    except CompressError as e:
        print(f"compress: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
