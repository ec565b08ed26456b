"""Why did a mixed 8/4/3/2 GPTQ plan give perplexity 669 where round-to-nearest gave 20 (issue 3)?

Three suspects, each measured on SmolLM2-135M-Instruct with WikiText-2 raw test perplexity on a fixed prefix:
  kernel:  the model object GPTQModel holds right after quantize() vs the same checkpoint saved and reloaded
           (uniform 4/3/2 and the 8/4/3/2 plan; cheap calibration, since only the two must agree);
  rtn:     plain round-to-nearest (compress.quant.rtn, GPTQ's grid) with the same plans: how much a 2-bit
           layer costs this model before GPTQ does anything;
  calib:   GPTQ on the 8/4/3/2 plan with 16 short sentences (the reported setting) vs 16 x 512 tokens.
The packing itself is checked separately: every reloaded checkpoint of eval/bench_mixed.py is compared with
the weights unpacked from its safetensors in plain torch. Resumable; run alone:

    COMPRESS_DATA_DIR=../shared/data python eval/investigate_low_bits.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))

from compress.provenance import versions  # noqa: E402
from compress.data import calibration_samples, calibration_texts, data_dir, wikitext2_test_text  # noqa: E402
from compress.model import decoder_layers, in_features, linears, load_model, resolve_model_path  # noqa: E402
from compress.evaluation.perplexity import perplexity  # noqa: E402
from compress.plan import Plan  # noqa: E402
from compress.model import load_gptq
from compress.quant.gptq import quantize_config  # noqa: E402
from compress.quant.rtn import fake_quantize  # noqa: E402
from compress.quant.storage import group_size_for  # noqa: E402

GROUP_SIZE = 64
N_LAYERS = 30
PLANS = {"uniform-4": [4] * N_LAYERS, "uniform-3": [3] * N_LAYERS, "uniform-2": [2] * N_LAYERS,
         "mixed-8/4/3/2": [(8, 4, 3, 2)[i % 4] for i in range(N_LAYERS)]}  # a quarter of the layers at each


def rtn_ppl(bits: list[int], test_ids, windows: int, model_spec) -> float:
    model, _ = load_model(model_spec)
    with torch.no_grad():
        for layer, b in zip(decoder_layers(model), bits):
            for module in linears(layer).values():
                module.weight.copy_(fake_quantize(module.weight, b, group_size_for(in_features(module), GROUP_SIZE)))
    return perplexity(model, test_ids, max_windows=windows, progress=False).ppl


def gptq(model_path: str, bits: list[int], samples: list[dict], out: Path):
    """GPTQModel's own flow; returns the wrapper whose .model is the in-memory quantized model."""
    from gptqmodel import GPTQModel

    config, _ = quantize_config(model_path, Plan.uniform(N_LAYERS).with_bits(bits))
    model = GPTQModel.load(model_path, config)
    model.quantize(samples, batch_size=4)
    model.save(str(out))
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("eval/results/low_bits_investigation.json"))
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--work", type=Path, default=Path("/tmp/investigate_low_bits"))
    args = p.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    root = data_dir(None)
    model_path = resolve_model_path(None)
    fp, tokenizer = load_model(None)
    test_ids = tokenizer(wikitext2_test_text(root), return_tensors="pt").input_ids[0]
    texts = calibration_texts("wikitext2-valid", root)
    long_calib = calibration_samples(tokenizer, texts, n_samples=16, seq_len=512, seed=0)
    # the reported setting: 16 short sentences (here: the first 16 WikiText-2 valid sentences of 8-40 words)
    short = [s.strip() + "." for t in texts for s in t.split(". ") if 8 <= len(s.split()) <= 40][:16]
    as_samples = lambda rows: [{"input_ids": r, "attention_mask": [1] * len(r)} for r in rows]  # noqa: E731
    short_samples = as_samples([tokenizer(t).input_ids for t in short])
    long_samples = as_samples([r.tolist() for r in long_calib])
    results["setup"] = {"ppl": f"WikiText-2 raw test, first {args.windows} windows of 2048",
                        "group_size": GROUP_SIZE, "sym": True, "damp_percent": 0.05, "versions": versions(),
                        "short_calib_tokens": sum(len(s["input_ids"]) for s in short_samples),
                        "long_calib_tokens": long_calib.numel()}
    save = lambda: args.out.write_text(json.dumps(results, indent=1) + "\n")  # noqa: E731
    if "unquantized" not in results:
        results["unquantized"] = perplexity(fp, test_ids, max_windows=args.windows, progress=False).ppl
        save()
    del fp

    for name, bits in PLANS.items():
        key = f"rtn {name}"
        if key not in results:
            results[key] = rtn_ppl(bits, test_ids, args.windows, None)
            print(key, results[key], flush=True)
            save()

    runs = [(f"gptq {name} (4 x 512 calib)", bits, long_samples[:4]) for name, bits in PLANS.items()]
    runs += [("gptq mixed-8/4/3/2 (16 short sentences)", PLANS["mixed-8/4/3/2"], short_samples),
             ("gptq mixed-8/4/3/2 (16 x 512 calib)", PLANS["mixed-8/4/3/2"], long_samples)]
    for key, bits, samples in runs:
        if key in results:
            continue
        folder = args.work / "q"
        shutil.rmtree(folder, ignore_errors=True)
        wrapper = gptq(model_path, bits, samples, folder)
        try:
            in_memory = perplexity(wrapper.model.eval(), test_ids, max_windows=args.windows, progress=False).ppl
        except Exception as e:  # noqa: BLE001 - the failure itself is the finding
            in_memory = f"{type(e).__name__}: {e}"
        del wrapper
        reloaded = perplexity(load_gptq(folder)[0], test_ids, max_windows=args.windows, progress=False).ppl
        results[key] = {"in_memory": in_memory, "reloaded": reloaded}
        print(key, results[key], flush=True)
        save()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
