"""Issue 15 item 1: are asymmetric grids worth an option? Uniform GPTQ (compress's solver, the same Hessians)
at symmetric and asymmetric grids of equal bytes (the GPTQ format stores packed zeros either way), judged like
eval/mixed_units.py: KL on 8 held-out WikiText-2 *valid* rows, perplexity on the first 4 *test* windows of 2048.
opt-RTN has no asymmetric form here (compress.quant.opt_rtn follows auto-round's symmetric int path).

    COMPRESS_DATA_DIR=../shared/data python eval/asym_options.py --out eval/results/asym_options
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.bits.options import nearest_option  # noqa: E402
from compress.bits.unit_costs import (allocation_applied, kl_to, linear_modules, log_probs, round_unit,  # noqa: E402
                                      unit_hessians, unit_weight)
from compress.data import calibration_samples, calibration_texts, data_dir, wikitext2_test_text  # noqa: E402
from compress.evaluation.perplexity import perplexity  # noqa: E402
from compress.model import load_model  # noqa: E402
from compress.model.units import model_units  # noqa: E402
from compress.plan import Option  # noqa: E402
from compress.provenance import versions  # noqa: E402
from compress.quant.storage import unit_bytes  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--out", default="eval/results/asym_options")
    p.add_argument("--options", default="3b-g128,3b-g64,4b-g128,4b-g64")
    p.add_argument("--windows", type=int, default=4)
    args = p.parse_args()
    torch.manual_seed(0)
    model, tok = load_model(args.model)
    model.requires_grad_(False)
    units, mods = model_units(model), linear_modules(model)
    rows = calibration_samples(tok, calibration_texts("wikitext2-valid", data_dir(None)), n_samples=40,
                               seq_len=512, seed=0)
    held, calib = rows[:8], rows[8:]  # as mixed_units: 32 Hessian rows, 8 held-out KL rows
    hessians = unit_hessians(model, units, calib)
    reference = log_probs(model, held)
    test_ids = tok(wikitext2_test_text(data_dir(None)), return_tensors="pt").input_ids[0]
    params = sum(u.params for u in units)
    out = {}
    for label in args.options.split(","):
        for sym in (True, False):
            base = Option.parse(label)
            option = Option(base.bits, base.group_size, sym)
            started = time.perf_counter()
            alloc = {u.key: nearest_option(u, option) for u in units}  # g128 -> g64 on SmolLM2's 576
            table = {u.key: {alloc[u.key]: round_unit(unit_weight(mods, u), hessians[u.key], alloc[u.key]).half()}
                     for u in units}
            with allocation_applied(model, units, table, alloc):
                kl = kl_to(model, held, reference)
                ppl = perplexity(model, test_ids, max_windows=args.windows, progress=False).ppl
            size = sum(unit_bytes(u, alloc[u.key]) for u in units)
            out[option.label] = {"bits": round(8 * size / params, 4), "kl": round(kl, 4), "ppl": round(ppl, 2),
                                 "seconds": round(time.perf_counter() - started, 1)}
            print(option.label, out[option.label], flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(
        {"model": args.model or "SmolLM2-135M-Instruct (bundled)", "rounding": "gptq (compress's solver)",
         "options": out, "meta": {"versions": versions(), "machine": "2-core CPU, 24 GiB (no GPU)"}}, indent=1))


if __name__ == "__main__":
    main()
