"""Issue 15, the 3-bit side under opt-RTN: which cost model's knapsack beats uniform / AutoScheme at equal bytes?

Every row: the exact knapsack (compress.bits.knapsack) over the default options on one cost model, at exactly
the bytes of a plain alternative (uniform 3b-g64 / 3b-g128, AutoScheme's allocations at 3.25 / 3.5), the
weights taken from mixed_units.py's opt-RTN table (so rows differ only in their allocation); WikiText-2 test
perplexity on the first --windows windows of 2048 tokens, the per-window NLL cached in --out.

Cost models (per unit u and option o; ΔW = W − Q_o; gradients on --grad-samples calibration rows at uniform
3b-g64, or 4b-g64 where named):
  fisher        ½ Σ F ⊙ ΔW², F the squared gradient per row (compress's default)
  taylor        Σ |G ⊙ ΔW| (AutoScheme's delta loss at one shared point)
  output        tr(ΔW H ΔWᵀ) (GPTQ's objective; no layer importance)
  fisher-3/4    fisher, with 4/8-bit options priced at the 4b-g64 point
  kfac          ½ Σ_i D_i (ΔW H ΔWᵀ)_ii, D_i = Σ_tokens (∂ℓ_t/∂y_i)² per token (K-FAC, diagonal in the output)
  scaled-output output × a_u, a_u = fisher(u, 3b-g64) / output(u, 3b-g64) (HIGGS-style: one importance per unit)
  fisher-clean  fisher with gradients from calibration rows whose WikiText '<unk>' markers are removed
  fisher-64     fisher from 64 gradient rows instead of 16
  abs-taylor    Σ |ΔW| ⊙ mean_rows |g_row| — AutoScheme's accumulation (auto-round 0.16.1
                auto_scheme/delta_loss.py: weight_score += |grad ⊙ (W − qdq_w)|.sum() per batch), at one shared point

    COMPRESS_DATA_DIR=../shared/data python eval/three_bit_costs.py    # needs /tmp/mixed_units_optrtn/table.pt
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mixed_units as mu  # noqa: E402
from compress.bits.unit_costs import (allocation_applied, gradients, linear_modules, proxy_costs,  # noqa: E402
                                      unit_weight)
from compress.data import calibration_samples, calibration_texts, data_dir  # noqa: E402
from compress.plan import Option  # noqa: E402

POINTS = ("uniform 3b-g64", "AutoScheme@3.5", "AutoScheme@3.25", "uniform 3b-g128")
COSTS = ("fisher", "taylor", "output", "fisher-3/4", "kfac", "scaled-output", "fisher-clean", "fisher-64", "abs-taylor")


def abs_gradients(model, calib: torch.Tensor, units) -> dict[str, torch.Tensor]:
    """{unit key: mean over rows of |∂L_row/∂W|}, stacked like the unit's weight (L: the row's mean token loss)."""
    mods = linear_modules(model)
    params = {n: mods[n].weight for u in units for n in u.modules}
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    try:
        for row in calib.split(1):
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=row, use_cache=False).logits[:, :-1].float()
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), row[:, 1:].reshape(-1)).backward()
            for n, p in params.items():
                sums[n] += p.grad.abs()
    finally:
        model.zero_grad(set_to_none=True)
        for p in params.values():
            p.requires_grad_(False)
    return {u.key: torch.cat([sums[n] for n in u.modules]) / len(calib) for u in units}


def output_sensitivity(model, calib: torch.Tensor, units) -> dict[str, torch.Tensor]:
    """{unit key: Σ over tokens of (∂ℓ_t/∂y)² per output row (out,)}, mean over rows; ℓ summed over tokens."""
    mods = linear_modules(model)
    sums = {n: torch.zeros(mods[n].out_features) for u in units for n in u.modules}

    def hook(name):
        def grab(_, grad_in, grad_out):
            sums[name] += grad_out[0].detach().float().reshape(-1, grad_out[0].shape[-1]).square().sum(0)
        return grab

    handles = [mods[n].register_full_backward_hook(hook(n)) for n in sums]
    emb = model.get_input_embeddings()
    try:
        for row in calib.split(1):
            x = emb(row).detach().requires_grad_(True)  # backward hooks need an input that wants a gradient
            logits = model(inputs_embeds=x, use_cache=False).logits[:, :-1].float()
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), row[:, 1:].reshape(-1),
                                              reduction="sum").backward()
    finally:
        for h in handles:
            h.remove()
    return {u.key: torch.cat([sums[n] for n in u.modules]) / len(calib) for u in units}


class Costs:
    def __init__(self, study, work: Path):
        self.s, self.work = study, work

    def cached(self, name: str, make):
        path = self.work / f"costs-{name}.pt"
        if not path.exists():
            started = time.perf_counter()
            torch.save(make(), path)
            print(f"costs {name}: {time.perf_counter() - started:.0f} s", flush=True)
        return torch.load(path)

    def fisher_from(self, rows: torch.Tensor) -> dict:
        s = self.s
        with allocation_applied(s.model, s.units, s.table, s.uniform("3b-g64")):
            grad, fisher = gradients(s.model, rows, s.units)
        c = proxy_costs(s.model, s.units, s.table, s.hessians, grad, fisher)["fisher"]
        return {k: {o.label: v for o, v in row.items()} for k, row in c.items()}

    def at_base(self, statistic, cost) -> dict:
        """{unit: {option label: cost(stat, W, Q, H)}} with stat = statistic(model, rows, units) taken at 3b-g64."""
        s = self.s
        with allocation_applied(s.model, s.units, s.table, s.uniform("3b-g64")):
            stat = statistic(s.model, s.calib[:s.args.grad_samples], s.units)
        mods, out = linear_modules(s.model), {}
        for u in s.units:
            w = unit_weight(mods, u)
            for o, q in s.table[u.key].items():
                out.setdefault(u.key, {})[o.label] = cost(stat[u.key], w, q.float(), s.hessians[u.key])
        return out

    def kfac(self) -> dict:  # ½ Σ_i D_i (ΔW H ΔWᵀ)_ii
        return self.at_base(output_sensitivity,
                            lambda d, w, q, h: 0.5 * float((d * (((w - q) @ h) * (w - q)).sum(1)).sum()))

    def abs_taylor(self) -> dict:  # Σ |ΔW| ⊙ mean |g_row|
        return self.at_base(abs_gradients, lambda g, w, q, h: float((g * (w - q).abs()).sum()))

    def clean_rows(self) -> torch.Tensor:
        text = re.sub(r" ?<unk>", "", calibration_texts("wikitext2-valid", data_dir(None))[0])
        return calibration_samples(self.s.tok, [text], n_samples=self.s.args.grad_samples, seq_len=512, seed=0)

    def __getitem__(self, name: str) -> dict:
        m = self.s.cost_models()
        if name in ("fisher", "taylor"):
            return m[f"{name}@3b-g64"]
        if name == "output":
            return m["output"]
        if name == "fisher-3/4":
            f3, f4 = m["fisher@3b-g64"], m["fisher@4b-g64"]
            return {k: {o: (f3[k][o] if o[0] in "23" else f4[k][o]) for o in row} for k, row in f3.items()}
        if name == "kfac":
            return self.cached("kfac-3b-g64", self.kfac)
        if name == "scaled-output":
            f, out = m["fisher@3b-g64"], m["output"]
            return {k: {o: out[k][o] * f[k]["3b-g64"] / out[k]["3b-g64"] for o in row} for k, row in out.items()}
        if name == "fisher-clean":
            return self.cached("fisher-clean-3b-g64", lambda: self.fisher_from(self.clean_rows()))
        if name == "fisher-64":
            more = calibration_samples(self.s.tok, calibration_texts("wikitext2-valid", data_dir(None)),
                                       n_samples=64, seq_len=512, seed=1)  # other rows than the KL rows' seed
            return self.cached("fisher-64-3b-g64", lambda: self.fisher_from(more))
        if name == "abs-taylor":
            return self.cached("abs-taylor-3b-g64", self.abs_taylor)
        raise KeyError(name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/mixed_units_optrtn", help="mixed_units.py --rounding opt-rtn's cache")
    p.add_argument("--out", default="eval/results/mixed_units-optrtn/three_bit_costs.json")
    p.add_argument("--autoscheme", default="eval/results/mixed_units/autoscheme.json")
    p.add_argument("--costs", default=",".join(COSTS))
    p.add_argument("--points", default=",".join(POINTS))
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--report", action="store_true", help="print the markdown table of --out and stop")
    args = p.parse_args()
    if args.report:
        print(table(json.loads(Path(args.out).read_text()), args.points.split(","), args.costs.split(","), args.windows))
        return
    sys.argv = [sys.argv[0], "--work", args.work, "--out", "/tmp/three_bit_costs", "--rounding", "opt-rtn"]
    study = mu.Study(mu.parse())
    study.load_table()
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {}
    lane = json.loads(Path(args.autoscheme).read_text())["budgets"]
    plain = {f"uniform {l}": study.uniform(l) for l in ("3b-g64", "3b-g128")}
    plain |= {f"AutoScheme@{b}": {u.key: Option.parse(lane[b]["allocation"][u.key]) for u in study.units}
              for b in ("3.25", "3.5")}
    costs, ids, seq = Costs(study, Path(args.work)), study.test_ids, 2048

    def record(name: str, alloc: dict) -> None:
        if name in done and len(done[name]["nll"]) >= args.windows:
            return
        nll = []
        with allocation_applied(study.model, study.units, study.table, alloc), torch.inference_mode():
            for w in range(args.windows):
                x = ids[w * seq:(w + 1) * seq][None]
                logits = study.model(input_ids=x, use_cache=False).logits[0, :-1].float()
                nll.append(float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")))
        done[name] = {"bits": study.size_bits(alloc)[1], "nll": nll, "allocation": {k: o.label for k, o in alloc.items()}}
        out.write_text(json.dumps(done, indent=1))
        print(f"{name:45s} {done[name]['bits']:.3f} b  ppl{args.windows} {ppl(done[name], args.windows):.2f}", flush=True)

    for point in args.points.split(","):
        record(point, plain[point])
        bits = study.size_bits(plain[point])[1]
        for cname in args.costs.split(","):
            row = {k: {o: (c if o in mu.DEFAULT else float("inf")) for o, c in r.items()} for k, r in costs[cname].items()}
            record(f"{cname} @={point}", study.pick(study.solve(row), bits))


def table(done: dict, points: list[str], costs: list[str], windows: int) -> str:
    """Markdown: one row per plain alternative, its ppl then each cost model's knapsack at its bytes (Δ %)."""
    lines = ["| at the bytes of | bits | plain | " + " | ".join(costs) + " |", "|---|---|---|" + "---|" * len(costs)]
    for point in points:
        if point not in done:
            continue
        base = ppl(done[point], windows)
        cells = []
        for c in costs:
            row = done.get(f"{c} @={point}")
            cells.append("–" if row is None else f"{ppl(row, windows):.2f} ({100 * (ppl(row, windows) / base - 1):+.1f} %)")
        lines.append(f"| {point} | {done[point]['bits']:.3f} | {base:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ppl(row: dict, windows: int) -> float:
    """Perplexity over the first `windows` windows of a cached row (2047 predicted tokens each)."""
    return math.exp(sum(row["nll"][:windows]) / (windows * 2047))


if __name__ == "__main__":
    main()
