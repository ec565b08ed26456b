"""Real checkpoints for frontier points of eval/mixed_units.py: the allocation -> GPTQModel (per-unit `dynamic`)
-> saved GPTQ folder -> its stored weights unpacked with plain torch into the float model -> the same
WikiText-2 test windows and calibration KL as the simulation; and the folder loaded with GPTQModel.load.
Results: checkpoints.json beside results.json.

    COMPRESS_DATA_DIR=../shared/data GPTQMODEL_CPU_WORKERS=2 python eval/mixed_units_checkpoint.py \
        --name "uniform 3b-g64" --name "unit knapsack (fisher@3b-g64) @3.25"
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.bits.unit_costs import kl_to, log_probs  # noqa: E402
from compress.model.units import model_units  # noqa: E402
from compress.bits.unit_plan import to_plan  # noqa: E402
from compress.data import calibration_samples, calibration_texts, data_dir, wikitext2_test_text  # noqa: E402
from compress.evaluation.perplexity import perplexity  # noqa: E402
from compress.model import load_gptq, load_model, resolve_model_path  # noqa: E402
from compress.plan import Option  # noqa: E402
from compress.quant.gptq import GPTQConfig, plan_config, quantize_gptq  # noqa: E402
from compress.quant.unpack import load_dequantized  # noqa: E402


def load_check(out: Path, model, test_ids) -> dict:
    """GPTQModel.load of the folder and a forward through its kernels, against the unpacked weights in `model`.
    A kernel that refuses a unit's scheme on this machine is recorded, not raised: it is a finding."""
    loaded, _ = load_gptq(out)
    try:
        with torch.inference_mode():
            ids = test_ids[:256].unsqueeze(0)
            got, want = loaded(ids).logits.float(), model(ids).logits.float()
        return {"gptqmodel_load_cosine": float(torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), 0))}
    except RuntimeError as e:  # e.g. the CPU int4 kernel refusing group size 576 (4-bit per channel)
        return {"gptqmodel_forward_error": str(e).splitlines()[0][:300]}
    finally:
        del loaded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="eval/results/mixed_units/results.json")
    p.add_argument("--name", action="append", required=True, help="frontier entry to quantize for real")
    p.add_argument("--work", default="/tmp/mixed_units/checkpoints")
    p.add_argument("--calib-samples", type=int, default=64, help="GPTQModel calibration rows (compress run's default)")
    p.add_argument("--reuse", action="store_true", help="measure a folder already quantized under --work again")
    args = p.parse_args()
    path = Path(args.results)
    results = json.loads(path.read_text())
    meta = results["meta"]["args"]
    model, tok = load_model(meta["model"])
    units = model_units(model)
    root = data_dir(None)
    rows = calibration_samples(tok, calibration_texts("wikitext2-valid", root),
                               n_samples=meta["calib_samples"] + meta["kl_samples"], seq_len=meta["seq_len"], seed=0)
    kl_rows = rows[meta["calib_samples"]:]
    reference = log_probs(model, kl_rows)
    test_ids = tok(wikitext2_test_text(root), return_tensors="pt").input_ids[0]
    calib = calibration_samples(tok, calibration_texts("wikitext2-valid", root), n_samples=args.calib_samples,
                                seq_len=512, seed=0)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    out_path = path.parent / "checkpoints.json"
    for name in args.name:
        entry = results["frontier"][name]
        allocation = {u.key: Option.parse(entry["allocation"][u.key]) for u in units}
        out = Path(args.work) / name.replace(" ", "_").replace("/", "-").replace("@", "at")
        plan = to_plan(units, allocation)
        if args.reuse and (out / "model.safetensors").exists():
            stats = {"effective_bits": plan_config(model, plan, GPTQConfig()).effective_bits, "seconds": None,
                     "size_bytes": sum(f.stat().st_size for f in out.glob("*.safetensors"))}
        else:
            shutil.rmtree(out, ignore_errors=True)
            stats = quantize_gptq(resolve_model_path(meta["model"]), plan, calib, out, GPTQConfig())
        model.load_state_dict(original)
        load_dequantized(model, out)
        row = {"gptqmodel_seconds": stats["seconds"], "calib_samples": args.calib_samples,
               "effective_bits": stats["effective_bits"], "size_bytes": stats["size_bytes"],
               "kl": kl_to(model, kl_rows, reference),
               "ppl": perplexity(model, test_ids, max_windows=meta["windows"], progress=False).ppl}
        row.update(load_check(out, model, test_ids))
        model.load_state_dict(original)
        done = json.loads(out_path.read_text()) if out_path.exists() else {}
        done[name] = row
        out_path.write_text(json.dumps(done, indent=1))
        print(name, row, flush=True)


if __name__ == "__main__":
    main()
