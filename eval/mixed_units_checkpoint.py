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


class Bench:
    """The float model, KL rows and reference, and WikiText-2 test ids of a mixed_units study (its results.json
    meta): measures any saved GPTQ folder by unpacking its stored weights into the float model."""

    def __init__(self, meta: dict):
        self.meta = meta
        self.model, self.tok = load_model(meta["model"])
        self.root = data_dir(None)
        rows = calibration_samples(self.tok, calibration_texts("wikitext2-valid", self.root),
                                   n_samples=meta["calib_samples"] + meta["kl_samples"], seq_len=meta["seq_len"], seed=0)
        self.kl_rows = rows[meta["calib_samples"]:]
        self.reference = log_probs(self.model, self.kl_rows)
        self.test_ids = self.tok(wikitext2_test_text(self.root), return_tensors="pt").input_ids[0]
        self.original = {k: v.clone() for k, v in self.model.state_dict().items()}

    def measure(self, folder: Path) -> dict:
        """KL on the study's held-out calibration rows and perplexity on its test windows, of `folder`'s
        stored weights; then GPTQModel.load of the folder (load_check)."""
        self.model.load_state_dict(self.original)
        load_dequantized(self.model, folder)
        row = {"size_bytes": sum(f.stat().st_size for f in folder.glob("*.safetensors")),
               "kl": kl_to(self.model, self.kl_rows, self.reference),
               "ppl": perplexity(self.model, self.test_ids, max_windows=self.meta["windows"], progress=False).ppl}
        row.update(load_check(folder, self.model, self.test_ids))
        self.model.load_state_dict(self.original)
        return row


def record(path: Path, name: str, row: dict) -> None:
    done = json.loads(path.read_text()) if path.exists() else {}
    done[name] = row
    path.write_text(json.dumps(done, indent=1))
    print(name, row, flush=True)


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
    bench = Bench(results["meta"]["args"])
    units = model_units(bench.model)
    calib = calibration_samples(bench.tok, calibration_texts("wikitext2-valid", bench.root),
                                n_samples=args.calib_samples, seq_len=512, seed=0)
    for name in args.name:
        entry = results["frontier"][name]
        allocation = {u.key: Option.parse(entry["allocation"][u.key]) for u in units}
        out = Path(args.work) / name.replace(" ", "_").replace("/", "-").replace("@", "at")
        plan = to_plan(units, allocation)
        if args.reuse and (out / "model.safetensors").exists():
            stats = {"effective_bits": plan_config(bench.model, plan, GPTQConfig()).effective_bits, "seconds": None}
        else:
            shutil.rmtree(out, ignore_errors=True)
            stats = quantize_gptq(resolve_model_path(bench.meta["model"]), plan, calib, out, GPTQConfig())
        record(path.parent / "checkpoints.json", name,
               {"gptqmodel_seconds": stats["seconds"], "calib_samples": args.calib_samples,
                "effective_bits": stats["effective_bits"], **bench.measure(out)})


if __name__ == "__main__":
    main()
