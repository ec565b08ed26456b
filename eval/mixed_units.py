"""Issue 15 study: per-unit mixed precision against uniform GPTQ at equal bytes.

Stages (each cached under --work so a rerun resumes; run alone, 2 CPU cores):
  table     Hessians on calibration text, then every fused unit x option through GPTQ's solver
  grads     gradient and squared gradient of the LM loss at uniform base points (3b-g64, 4b-g64)
  validate  Spearman(predicted, measured KL) of each cost model over >= 30 random allocations of equal bytes
  frontier  allocations at each budget by each method -> KL on held-out calibration rows and WikiText-2
            test perplexity on a fixed prefix (windows x 2048 tokens); then `more`
  more      only the other cost models (--more-costs) and re-linearisation at --more-budgets
  lmeval    zero-shot accuracy on 3 lm-eval tasks (--lmeval-tasks, --lmeval-limit documents each) for the
            float model and the frontier's equal-bytes pairs (uniform vs default, AutoScheme vs default)
Every weight comes from the same solver and Hessians, so methods differ only in their allocation.
Calibration rows (Hessians, gradients, KL) are cut from WikiText-2 *validation*; perplexity is on *test*.

    COMPRESS_DATA_DIR=../shared/data python eval/mixed_units.py --out eval/results/mixed_units
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.bits import knapsack  # noqa: E402
from compress.bits.candidates import candidate_plans, llamacpp_mix  # noqa: E402
from compress.bits.search import level_switch  # noqa: E402
from compress.bits.unit_plan import gradient_point, measured_choice, relinearise  # noqa: E402
from compress.bits.unit_costs import (allocation_applied, gradients, isolated_kl, kl_to, linear_modules,  # noqa: E402
                                      log_probs, proxy_costs, rounded_table, rtn_table, set_unit_weight,
                                      unit_hessians, unit_weight)
from compress.quant.gptq import ROUNDINGS  # noqa: E402
from compress.model.units import model_units  # noqa: E402
from compress.bits.options import default_options, nearest_option, option_grid  # noqa: E402
from compress.quant.storage import unit_bytes  # noqa: E402
from compress.plan import Option  # noqa: E402
from compress.data import calibration_samples, calibration_texts, data_dir, wikitext2_test_text  # noqa: E402
from compress.evaluation.perplexity import perplexity  # noqa: E402
from compress.model import load_model  # noqa: E402
from compress.errors import CompressError  # noqa: E402
from compress.provenance import versions  # noqa: E402
from compress.scores import spearman  # noqa: E402

BUDGETS_ORDER = (3.25, 3.0, 2.5, 4.0, 3.5, 4.5)  # the headline budget first
DEFAULT = {o.label for o in default_options()}  # compress run --bits mixed's options
# uniform options the knapsack is also run at, at exactly their bytes (the "equal bytes")
EQUAL_BYTES = ("3b-g64", "4b-g64", "3b-g128", "3b-g32", "4b-ch", "4b-g128")
# uniform options left out of the sweep: far from every budget (8-bit) or measured useless at 2 bits
SKIPPED_UNIFORM = ("8b-g32", "8b-g128", "2b-g128", "2b-ch", "8b-g64", "8b-ch", "2b-g32", "2b-g64")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model spec (default: bundled SmolLM2-135M-Instruct)")
    p.add_argument("--out", default="eval/results/mixed_units")
    p.add_argument("--work", default="/tmp/mixed_units", help="cache of the rounded table (GBs; not committed)")
    p.add_argument("--calib-samples", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--kl-samples", type=int, default=8, help="held-out calibration rows the KL is measured on")
    p.add_argument("--grad-samples", type=int, default=16)
    p.add_argument("--windows", type=int, default=4, help="WikiText-2 test windows of 2048 tokens")
    p.add_argument("--random", type=int, default=30, help="random allocations for the Spearman check")
    p.add_argument("--asym", action="store_true", help="also asymmetric options")
    p.add_argument("--rounding", default="gptq", choices=ROUNDINGS,
                   help="how every unit x option is rounded: GPTQ's solver, or auto-round's optimised RTN")
    p.add_argument("--stages", default="table,validate,frontier")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS_ORDER)), help="frontier budgets, in the order run")
    p.add_argument("--evo-points", default="3b-g64,AutoScheme@3.5",
                   help="evo at exactly the bytes of these: uniform options or AutoScheme@<budget>")
    p.add_argument("--more-costs", default="isolated-kl,taylor@3b-g64,output,fisher-rtn@3b-g64",
                   help="other cost models measured on the frontier after the default")
    p.add_argument("--relin", type=int, default=2, help="re-linearisation rounds (0: none)")
    p.add_argument("--more-budgets", default="3.25", help="budgets the other cost models and re-linearisation run at")
    p.add_argument("--evo-generations", type=int, default=25)
    p.add_argument("--two-bit-rows", type=int, default=1, help="also the knapsack with 2-bit options at each budget")
    p.add_argument("--checked-rows", type=int, default=1, help="also the KL-checked default at each point")
    p.add_argument("--layer-rows", type=int, default=1, help="also the per-layer knapsack at each budget")
    p.add_argument("--default-variant", default="default", choices=("default", "default-3b-ch"),
                   help="the options compress's default rows choose from: the default set, or it less 3b-ch")
    p.add_argument("--autoscheme", default=None, help="autoscheme.json to read (default: OUT/autoscheme.json)")
    p.add_argument("--lmeval-tasks", default="arc_easy,piqa,lambada_openai")
    p.add_argument("--lmeval-limit", type=int, default=250, help="documents per lm-eval task (first N)")
    p.add_argument("--lmeval-points", type=int, default=None, help="only the first N points (most informative first)")
    p.add_argument("--lmeval-only", default=None,
                   help="'|'-separated frontier names to evaluate instead (after float), in this order")
    return p.parse_args()


class CostModels(dict):
    """{cost model name: {unit key: {option label: cost}}}, each computed (and cached on disk) when first
    asked for: fisher@B / taylor@B (gradients at uniform option B), output, fisher-rtn@3b-g64, isolated-kl."""

    def __init__(self, study):
        super().__init__()
        self.study = study

    def __missing__(self, name: str) -> dict:
        s = self.study
        if name.endswith(("/no2", "/default", "/default-3b-ch")):  # the same costs, some options left out
            full, _, variant = name.rpartition("/")
            keep = {"no2": lambda o: not o.startswith("2b"), "default": DEFAULT.__contains__,
                    "default-3b-ch": lambda o: o in DEFAULT and o != "3b-ch"}[variant]
            value = {k: {o: (c if keep(o) else float("inf")) for o, c in row.items()}
                     for k, row in self[full].items()}
            self[name] = value
            return value
        kind, _, base = name.partition("@")
        if kind in ("fisher", "taylor"):
            value = s.costs_at(base, s.uniform(base))[kind]
        elif name == "output":
            value = s.costs_at("3b-g64", s.uniform("3b-g64"))["output"]
        elif kind == "fisher-rtn":
            value = s.rtn_costs_at(base, s.uniform(base))["fisher"]
        elif name == "isolated-kl":  # g64 options only: the others cost inf
            isolated = s.isolated([f"{b}b-g64" for b in (2, 3, 4, 8)])
            value = {k: {o.label: isolated[k].get(o.label, float("inf")) for o in s.table[k]} for k in isolated}
        else:
            raise KeyError(name)
        self[name] = value
        return value

    def items(self):  # every model, for the Spearman table
        for name in ("fisher@3b-g64", "fisher@4b-g64", "taylor@3b-g64", "taylor@4b-g64", "output",
                     "fisher-rtn@3b-g64", "isolated-kl"):
            yield name, self[name]


class Study:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out / "results.json"
        self.results = json.loads(self.results_path.read_text()) if self.results_path.exists() else {}
        self.model, self.tok = load_model(args.model)
        self.model.requires_grad_(False)
        self.units = model_units(self.model)
        root = data_dir(None)
        rows = calibration_samples(self.tok, calibration_texts("wikitext2-valid", root),
                                   n_samples=args.calib_samples + args.kl_samples, seq_len=args.seq_len, seed=0)
        self.calib, self.kl_rows = rows[:args.calib_samples], rows[args.calib_samples:]
        self.test_ids = self.tok(wikitext2_test_text(root), return_tensors="pt").input_ids[0]
        self.options = option_grid(asym=args.asym)
        self.decoder_params = sum(u.params for u in self.units)
        self.other_bytes = 2 * (sum(p.numel() for p in self.model.parameters()) - self.decoder_params)
        self.table = None

    def save(self) -> None:
        self.results["meta"] = {"model": self.args.model or "SmolLM2-135M-Instruct (bundled)",
                                "units": len(self.units), "decoder_params": self.decoder_params,
                                "other_bytes_bf16": self.other_bytes, "versions": versions(),
                                "machine": "2-core CPU, 24 GiB (no GPU)", "args": vars(self.args)}
        self.results_path.write_text(json.dumps(self.results, indent=1))

    # ---- stage: table -------------------------------------------------------------------------------------
    def load_table(self) -> None:
        path = self.work / "table.pt"
        if path.exists():
            self.hessians, table = torch.load(path)
            self.table = {k: {Option.parse(o): q for o, q in v.items()} for k, v in table.items()}
            return
        started = time.perf_counter()
        self.hessians = unit_hessians(self.model, self.units, self.calib)
        t_h = time.perf_counter() - started
        self.table = rounded_table(self.model, self.units, self.hessians, self.options, rounding=self.args.rounding)
        t_all = time.perf_counter() - started
        torch.save((self.hessians, {k: {o.label: q for o, q in v.items()} for k, v in self.table.items()}), path)
        self.results["timing"] = {"hessians_s": round(t_h, 1), "table_s": round(t_all - t_h, 1),
                                  "solves": sum(len(v) for v in self.table.values())}
        self.save()

    def size_bits(self, allocation) -> tuple[int, float]:
        """(bytes of the decoder units, bits per decoder weight)."""
        total = sum(unit_bytes(u, allocation[u.key]) for u in self.units)
        return total, 8 * total / self.decoder_params

    # ---- stage: grads -------------------------------------------------------------------------------------
    def costs_at(self, name: str, allocation) -> dict:
        """Proxy costs with gradients taken at `allocation` (cached by name)."""
        path = self.work / f"costs-{name}.pt"
        if path.exists():
            return torch.load(path)
        started = time.perf_counter()
        with allocation_applied(self.model, self.units, self.table, allocation):
            grad, fisher = gradients(self.model, self.calib[:self.args.grad_samples], self.units)
        costs = proxy_costs(self.model, self.units, self.table, self.hessians, grad, fisher)
        costs = {c: {k: {o.label: v for o, v in row.items()} for k, row in t.items()} for c, t in costs.items()}
        torch.save(costs, path)
        self.results.setdefault("timing", {})[f"costs_{name}_s"] = round(time.perf_counter() - started, 1)
        self.save()
        return costs

    def rtn_costs_at(self, name: str, allocation) -> dict:
        """The cheap variant: Fisher and Taylor costs with W − Q from round-to-nearest, gradients at `allocation`."""
        path = self.work / f"costs-rtn-{name}.pt"
        if path.exists():
            return torch.load(path)
        started = time.perf_counter()
        table = rtn_table(self.model, self.units, self.options)
        with allocation_applied(self.model, self.units, self.table, allocation):
            grad, fisher = gradients(self.model, self.calib[:self.args.grad_samples], self.units)
        costs = proxy_costs(self.model, self.units, table, self.hessians, grad, fisher)
        costs = {c: {k: {o.label: v for o, v in row.items()} for k, row in t.items()} for c, t in costs.items()}
        torch.save(costs, path)
        self.results.setdefault("timing", {})[f"costs_rtn_{name}_s"] = round(time.perf_counter() - started, 1)
        self.save()
        return costs

    def uniform(self, label: str) -> dict:
        option = Option.parse(label)
        return {u.key: nearest_option(u, option, self.options) for u in self.units}

    def reference(self):
        if not hasattr(self, "_ref"):
            self._ref = log_probs(self.model, self.kl_rows)
        return self._ref

    def kl(self, allocation) -> float:
        reference = self.reference()  # of the float model: taken before any allocation is applied
        with allocation_applied(self.model, self.units, self.table, allocation):
            return kl_to(self.model, self.kl_rows, reference)

    def ppl(self, allocation) -> float:
        with allocation_applied(self.model, self.units, self.table, allocation):
            return perplexity(self.model, self.test_ids, max_windows=self.args.windows, progress=False).ppl

    # ---- allocation --------------------------------------------------------------------------------------
    def solve(self, costs: dict, max_bits: float = 4.6) -> knapsack.Solution:
        """costs: {unit key: {option label: cost}} -> the DP over every budget up to `max_bits`."""
        cache = self.__dict__.setdefault("_solutions", {})
        if (id(costs), max_bits) in cache and cache[(id(costs), max_bits)][0] is costs:
            return cache[(id(costs), max_bits)][1]
        labels = [[o for o in self.table[u.key]] for u in self.units]
        cost_rows = [[costs[u.key][o.label] for o in opts] for u, opts in zip(self.units, labels)]
        size_rows = [[unit_bytes(u, o) for o in opts] for u, opts in zip(self.units, labels)]
        self._labels = labels
        solution = knapsack.solve(cost_rows, size_rows, int(max_bits * self.decoder_params / 8))
        cache[(id(costs), max_bits)] = (costs, solution)
        return solution

    def pick(self, solution, bits: float) -> dict:
        chosen = knapsack.pick(solution, int(bits * self.decoder_params / 8))
        return {u.key: opts[k] for u, opts, k in zip(self.units, self._labels, chosen)}

    # ---- stage: validate ---------------------------------------------------------------------------------
    def random_allocations(self, n: int, bits: float, options: list[str] | None, seed: int,
                           around: dict | None = None) -> list[dict]:
        """n allocations within `bits` per decoder weight: the knapsack on random costs (steeper for fewer
        bits, so each fills its budget), restricted to `options` labels when given; with `around` (costs),
        those costs times log-normal noise (σ = 1): equal-byte allocations near that optimum."""
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            costs = {u.key: {o.label: ((around[u.key][o.label] * math.exp(rng.gauss(0, 1)) if around else
                                        rng.random() * 4.0 ** -o.bits)
                                       if options is None or o.label in options else float("inf"))
                             for o in self.table[u.key]} for u in self.units}
            out.append(self.pick(self.solve(costs, bits + 0.01), bits))
        return out

    def isolated(self, labels: list[str]) -> dict:
        path = self.work / "isolated.pt"
        if path.exists():
            return torch.load(path)
        started = time.perf_counter()
        rows = self.kl_rows[:1]
        ref = log_probs(self.model, rows)
        kl = isolated_kl(self.model, self.units, self.table, [Option.parse(l) for l in labels], rows, ref)
        kl = {k: {o.label: v for o, v in row.items()} for k, row in kl.items()}
        torch.save(kl, path)
        self.results.setdefault("timing", {})["isolated_kl_s"] = round(time.perf_counter() - started, 1)
        self.save()
        return kl

    def cost_models(self) -> "CostModels":
        """One cache of cost models for the run (solve() caches its DP by the costs' identity)."""
        if not hasattr(self, "_models"):
            self._models = CostModels(self)
        return self._models

    def validate(self) -> None:
        g64 = [f"{b}b-g64" for b in (2, 3, 4, 8)]
        models = self.cost_models()
        sets = {"random, all options, 3.25 bits": (None, 3.25, 1, None),
                "near the Fisher optimum, g64 options, 3.25 bits": (g64, 3.25, 2, models["fisher@3b-g64"])}
        report = self.results.setdefault("validate", {})
        for name, (labels, bits, seed, around) in sets.items():
            done = report.get(name, {}).get("allocations", [])
            allocs = self.random_allocations(self.args.random, bits, labels, seed, around)
            for a in allocs[len(done):]:
                done.append({"bits": self.size_bits(a)[1], "kl": self.kl(a),
                             "allocation": {k: o.label for k, o in a.items()}})
                report[name] = {"allocations": done}
                self.save()
            measured = [d["kl"] for d in done]
            rho = {}
            for cname, cost in models.items():
                if cname == "isolated-kl" and labels is None:  # it has g64 options only
                    continue
                pred = [sum(cost[k][o] for k, o in d["allocation"].items()) for d in done]
                rho[cname] = round(spearman(pred, measured), 3)
            report[name] = {"allocations": done, "spearman": rho,
                            "bits_range": [min(d["bits"] for d in done), max(d["bits"] for d in done)]}
            print(name, rho, flush=True)
            self.save()


    # ---- stage: frontier ---------------------------------------------------------------------------------
    def measure(self, name: str, allocation, extra: dict | None = None) -> dict:
        """KL and perplexity of one allocation, recorded under results["frontier"][name] (cached)."""
        done = self.results.setdefault("frontier", {})
        if name in done:
            return done[name]
        size, bits = self.size_bits(allocation)
        row = {"bits": round(bits, 4), "decoder_bytes": size, "checkpoint_bytes": size + self.other_bytes,
               "kl": self.kl(allocation), "ppl": self.ppl(allocation),
               "allocation": {k: o.label for k, o in allocation.items()}, **(extra or {})}
        done[name] = row
        self.save()
        print(f"{name:40s} {bits:6.3f} bits  KL {row['kl']:.4f}  ppl {row['ppl']:.3f}", flush=True)
        return row

    def llamacpp_mix(self, bits: float) -> dict | None:
        """compress.bits.candidates.llamacpp_mix over this study's options (2-bit included where the table has
        it): the k-quant priorities on GPTQ units within `bits`; None where even the low width overshoots."""
        return llamacpp_mix(self.units, self.options, int(bits * self.decoder_params / 8), bits)

    def layer_costs(self) -> dict:
        """The old baseline's costs: per decoder layer and width (g64), KL with that layer alone rounded."""
        path = self.work / "layer_kl.pt"
        if path.exists():
            return torch.load(path)
        rows = self.kl_rows[:1]
        ref = log_probs(self.model, rows)
        out = {}
        for layer in sorted({u.layer for u in self.units}):
            mine = [u for u in self.units if u.layer == layer]
            for b in (2, 3, 4, 8):
                with allocation_applied(self.model, mine, self.table, {u.key: Option(b, 64) for u in mine}):
                    out.setdefault(layer, {})[b] = kl_to(self.model, rows, ref)
        torch.save(out, path)
        return out

    def layer_knapsack(self, bits: float) -> dict:
        """Today's rule: one width per decoder layer ({2,3,4,8} at g64), exact knapsack on isolated KL."""
        per_layer = self.layer_costs()
        layers = sorted(per_layer)
        widths = (2, 3, 4, 8)
        members = {i: [u for u in self.units if u.layer == i] for i in layers}
        sizes = [[sum(unit_bytes(u, Option(b, 64)) for u in members[i]) for b in widths] for i in layers]
        solution = knapsack.solve([[per_layer[i][b] for b in widths] for i in layers], sizes,
                                  int(4.6 * self.decoder_params / 8))
        chosen = knapsack.pick(solution, int(bits * self.decoder_params / 8))
        return {u.key: Option(widths[k], 64) for i, k in zip(layers, chosen) for u in members[i]}

    def relinearised(self, bits: float, rounds: int = 2) -> tuple[dict, list]:
        """unit_plan's re-linearisation on the cached table: round 0 is the knapsack on Fisher at the
        gradient point, each next round re-takes the gradients at the chosen allocation."""
        base = self.base(bits)
        costs_at = lambda a, r: (self.cost_models()[f"fisher@{base}"] if r == 0 else  # noqa: E731
                                 self.costs_at(f"relin-{bits}-{r - 1}", a)["fisher"])
        alloc, _, trace = relinearise(self.uniform(base), rounds, costs_at,
                                      lambda c: self.pick(self.solve(c), bits), self.kl)
        return alloc, trace

    def compress_at(self, bits: float, where: str, extra: dict | None = None) -> dict:
        """compress's default at `bits` (Fisher knapsack at gradient_point, default options, less 3b-ch with
        --default-variant default-3b-ch; with 2-bit options below its cheapest plan), measured as
        'unit knapsack (fisher@<base>, ...) @<where>'."""
        base, default = self.base(bits), bits >= self.cheapest_no2()
        variant = self.args.default_variant
        costs = self.cost_models()[f"fisher@{base}/{variant}" if default else f"fisher@{base}"]
        name = {"default": "default options", "default-3b-ch": "default options less 3b-ch"}[variant]
        name = name if default else "2/3/4/8 bits"
        try:
            allocation = self.pick(self.solve(costs), bits)
        except CompressError as e:  # e.g. 3b-g128's exact bytes: nothing cheaper than it without 3b-ch
            print(f"unit knapsack (fisher@{base}, {name}) @{where}: {e}", flush=True)
            return {}
        return self.measure(f"unit knapsack (fisher@{base}, {name}) @{where}", allocation, extra)

    def checked(self, bits: float, where: str, extra: dict | None = None) -> dict:
        """compress run's default as it ships (unit_plan with check): the Fisher knapsack on the default options,
        then compress.bits.candidates' plans (the two richest uniform plans within the bytes, the llama.cpp-style
        mix over the default options), the lowest KL on 4 calibration rows wins (the Hessians' rows here, which
        the run holds out; never the held-out KL rows nor the test text). Recorded as 'KL-checked default @<where>'."""
        name = f"KL-checked default @{where}"
        if name in self.results.get("frontier", {}):
            return self.results["frontier"][name]
        started = time.perf_counter()
        default = [o for o in self.options if o.label in DEFAULT]
        knapsack_plan = self.pick(self.solve(self.cost_models()[f"fisher@{self.base(bits)}/default"]), bits)
        plans = candidate_plans(self.units, default, int(bits * self.decoder_params / 8), bits, knapsack_plan)
        rows = self.calib[:4]
        if not hasattr(self, "_calib_ref"):  # the float model's, taken before any allocation is applied
            self._calib_ref = log_probs(self.model, rows)
        best, scores = measured_choice(self.model, self.units, self.hessians, plans, rows, self._calib_ref,
                                       self.args.rounding, self.table, progress=False)
        return self.measure(name, plans[best], {**(extra or {}), "checked": scores, "chosen": best,
                                                "check_seconds": round(time.perf_counter() - started, 1)})

    def cheapest_no2(self) -> float:
        """Bits per decoder weight of the cheapest plan without 2-bit options (3b-ch everywhere: 3.07 on SmolLM2)."""
        return self.size_bits({u.key: min((o for o in self.table[u.key] if o.bits == 3),
                                          key=lambda o: unit_bytes(u, o)) for u in self.units})[1]

    def base(self, bits: float) -> str:
        """The uniform option the Fisher costs at `bits` are linearised at: unit_plan's gradient_point."""
        return gradient_point(bits, self.options).label

    def frontier(self) -> None:
        """Most informative first, so a run cut short still answers: the uniform baselines, then at every
        budget the default (Fisher at the quantized point) against the llama.cpp mix and today's per-layer
        knapsack, then the other cost models and re-linearisation."""
        models = self.cost_models()
        sym = [o.label for o in self.options if o.sym and o.label not in SKIPPED_UNIFORM]
        for label in sorted(sym, key=lambda l: (abs(Option.parse(l).bits - 3.5), l)):
            self.measure(f"uniform {label}", self.uniform(label))
        for label in EQUAL_BYTES:  # the plain alternative at exactly its own bytes
            self.compress_at(self.size_bits(self.uniform(label))[1], f"={label}", {"equal_bytes_to": label})
        for label in EQUAL_BYTES if self.args.checked_rows else ():  # the default checked by calibration KL
            self.checked(self.size_bits(self.uniform(label))[1], f"={label}", {"equal_bytes_to": label})
        budgets = [float(b) for b in self.args.budgets.split(",")]
        for bits in budgets:
            base = self.base(bits)
            if bits >= self.cheapest_no2():
                self.compress_at(bits, f"{bits}")
                if self.args.checked_rows:
                    self.checked(bits, f"{bits}")
            if self.args.two_bit_rows:
                self.measure(f"unit knapsack (fisher@{base}) @{bits}", self.pick(self.solve(models[f"fisher@{base}"]), bits))
            if self.llamacpp_mix(bits) is not None:
                self.measure(f"llama.cpp-style mix @{bits}", self.llamacpp_mix(bits))
        for bits in budgets if self.args.layer_rows else ():  # last: isolated KL, 4 forwards per layer
            self.measure(f"layer knapsack (isolated KL, g64) @{bits}", self.layer_knapsack(bits))
        self.more()

    def more(self) -> None:
        """The other cost models and re-linearisation at --more-budgets."""
        models = self.cost_models()
        for bits in [float(b) for b in self.args.more_budgets.split(",")]:
            for cname in self.args.more_costs.split(","):
                if cname:
                    self.measure(f"unit knapsack ({cname}) @{bits}", self.pick(self.solve(models[cname]), bits))
            key = f"unit knapsack (fisher, re-linearised) @{bits}"
            if self.args.relin and key not in self.results.get("frontier", {}):
                alloc, trace = self.relinearised(bits, self.args.relin)
                self.measure(key, alloc, {"relin_kl_trace": trace})


    # ---- stage: autoscheme (its allocation, rounded like every other row) ----------------------------------
    def autoscheme(self) -> None:
        path = Path(self.args.autoscheme) if self.args.autoscheme else self.out / "autoscheme.json"
        if not path.exists():
            print(f"no {path}: run eval/autoscheme_lane.py first", flush=True)
            return
        lane = json.loads(path.read_text())
        for budget, entry in lane["budgets"].items():
            alloc = {u.key: Option.parse(entry["allocation"][u.key]) for u in self.units}
            same = "same GPTQ" if self.args.rounding == "gptq" else f"same {self.args.rounding}"
            row = self.measure(f"AutoScheme allocation, {same} @{float(budget):g}", alloc,
                               {"autoscheme_seconds": lane["seconds"]})
            at = 8 * row["decoder_bytes"] / self.decoder_params  # exactly AutoScheme's bytes
            where = {"equal_bytes_to": f"AutoScheme@{float(budget):g}"}
            self.compress_at(at, f"=AutoScheme@{float(budget):g}", where)
            if self.args.checked_rows and at >= self.cheapest_no2():  # the default options cannot go lower
                self.checked(at, f"=AutoScheme@{float(budget):g}", where)


    # ---- stage: lmeval (accuracy of the frontier's equal-bytes pairs) --------------------------------------
    def lmeval_points(self) -> list[str]:
        """float, then each equal-bytes pair (the plain alternative, then compress at its bytes), then the
        llama.cpp mixes and budget defaults: most informative first, so a run cut short still answers."""
        frontier = self.results.get("frontier", {})
        pairs = []
        for name, row in frontier.items():
            if "equal_bytes_to" in row and "default options" in name:
                other = row["equal_bytes_to"]
                same = "same GPTQ" if self.args.rounding == "gptq" else f"same {self.args.rounding}"
                plain = f"uniform {other}" if "@" not in other else f"AutoScheme allocation, {same} @{other.split('@')[1]}"
                pairs += [plain, name]
        rest = [n for n in frontier if n.startswith("llama.cpp-style")
                or ("default options) @" in n and "@=" not in n)]
        rest = [n for n in rest if frontier[n]["ppl"] < 500]  # collapsed points score chance on every task
        return ["float"] + [n for n in dict.fromkeys(pairs + rest) if n in frontier]

    def lmeval(self) -> None:
        from compress.evaluation.lmeval import EvalConfig, evaluate_model

        tasks = tuple(self.args.lmeval_tasks.split(","))
        config = EvalConfig(tasks=tasks, limit=self.args.lmeval_limit, batch_size=16)
        done = self.results.setdefault("lmeval", {})
        frontier = self.results.get("frontier", {})
        points = (["float"] + self.args.lmeval_only.split("|") if self.args.lmeval_only else
                  self.lmeval_points()[:self.args.lmeval_points])
        for name in points:
            if name in done and done[name]["limit"] == config.limit and tuple(done[name]["tasks"]) == tasks:
                continue
            labels = frontier[name]["allocation"] if name != "float" else {}
            started = time.perf_counter()
            with allocation_applied(self.model, self.units, self.table,
                                    {k: Option.parse(l) for k, l in labels.items()}):
                out = evaluate_model(self.model, self.tok, list(tasks), config, data_dir(None))
            acc = {t: {"metric": r["primary"], "value": r["metrics"][r["primary"]]["value"],
                       "stderr": r["metrics"][r["primary"]]["stderr"]} for t, r in out.items()}
            mean = sum(a["value"] for a in acc.values()) / len(acc)
            done[name] = {"tasks": acc, "mean": round(mean, 4), "limit": config.limit,
                          "bits": frontier.get(name, {}).get("bits"),
                          "ppl": self.ppl({}) if name == "float" else frontier[name]["ppl"],
                          "seconds": round(time.perf_counter() - started, 1)}
            self.save()
            print(f"{name:48s} mean acc {mean:.4f}  " + "  ".join(f"{t} {a['value']:.3f}" for t, a in acc.items()),
                  flush=True)

    # ---- stage: evo (EvoPress-style search, seeded from the knapsack, uniform and the llama.cpp mix) -------
    def evo_seeds(self, bits: float) -> dict:
        """The candidates at `bits` (evo's seeds, checked's choices): the default Fisher knapsack, every default
        uniform option within the bytes, the llama.cpp-style mix where it fits (never a peer's allocation)."""
        seeds = {"knapsack": self.pick(self.solve(self.cost_models()[f"fisher@{self.base(bits)}/default"]), bits)}
        if bits >= 3.1 and self.llamacpp_mix(bits) is not None:
            seeds["llama.cpp-style mix"] = self.llamacpp_mix(bits)
        for o in self.options:
            alloc = self.uniform(o.label)
            if o.label in DEFAULT and self.size_bits(alloc)[1] <= bits + 1e-9:
                seeds[f"uniform {o.label}"] = alloc
        return {n: a for n, a in seeds.items() if self.size_bits(a)[1] <= bits + 1e-9}  # the mix can overshoot

    def evo(self, bits: float, where: str, generations: int, offspring: int = 8, survivors: int = 2,
            seed: int = 0) -> dict:
        """EvoPress (Sieberling et al., ICML 2025) on units: a (1+λ) search within the bytes of `bits`. Each
        generation λ = `offspring` children of the parent by 1-3 mutations (level_switch: two units of one kind
        trade options within their joint bytes), ranked by KL on one fresh calibration row (a different Hessian
        row each generation), the best `survivors` re-measured on 4 fixed calibration rows against the parent
        (staged selection). Seeds: evo_seeds, the lowest 4-row KL starts. Calibration rows only; the held-out KL
        rows and the test text only judge the result. Recorded as 'evo (N gens) @<where>'."""
        key = f"evo ({generations} gens) @{where}"
        if key in self.results.get("frontier", {}):
            return self.results["frontier"][key]
        rng, started = random.Random(seed), time.perf_counter()
        fixed, pool = self.calib[:4], self.calib[4:]
        rows = [pool[g % len(pool)].unsqueeze(0) for g in range(generations)]
        ref_fixed = log_probs(self.model, fixed)  # float references first: the search then leaves units rounded
        refs = [log_probs(self.model, r) for r in rows]
        mods, state = linear_modules(self.model), {}
        floats = {u.key: unit_weight(mods, u) for u in self.units}

        def fitness(alloc, rows, ref):  # rewrites only the units whose option differs from the last call's
            for u in self.units:
                if state.get(u.key) != alloc[u.key]:
                    set_unit_weight(mods, u, self.table[u.key][alloc[u.key]].float())
                    state[u.key] = alloc[u.key]
            return kl_to(self.model, rows, ref)

        seeds = self.evo_seeds(bits)
        kinds, choices = {}, {}
        for u in self.units:
            kinds.setdefault(u.name, []).append(u.key)
            choices[u.key] = [o for o in self.table[u.key] if o.label in DEFAULT]
        by_key = {u.key: u for u in self.units}
        size_of = lambda k, o: unit_bytes(by_key[k], o)  # noqa: E731
        trace, accepted = [], 0
        try:
            seed_kl = {n: round(fitness(a, fixed, ref_fixed), 5) for n, a in seeds.items()}
            start = min(seed_kl, key=seed_kl.get)
            parent, best = seeds[start], seed_kl[start]
            for g in range(generations):
                children = []
                while len(children) < offspring:
                    child = parent
                    for _ in range(rng.randint(1, 3)):
                        child = level_switch(child, kinds, choices, size_of, rng) or child
                    if child is not parent:
                        children.append((fitness(child, rows[g], refs[g]), child))
                children.sort(key=lambda c: c[0])
                for _, child in children[:survivors]:
                    score = fitness(child, fixed, ref_fixed)
                    if score < best:
                        best, parent, accepted = score, child, accepted + 1
                trace.append(round(best, 5))
                print(f"evo @{where} gen {g + 1}/{generations}: 4-row KL {best:.5f} (accepted {accepted})", flush=True)
        finally:
            for u in self.units:
                set_unit_weight(mods, u, floats[u.key])
        return self.measure(key, parent, {"equal_bytes_to": where.lstrip("="), "evo_trace": trace,
                                          "evo_seed_kl": seed_kl, "evo_start": start, "evo_accepted": accepted,
                                          "evo_seconds": round(time.perf_counter() - started, 1)})

    def evo_points(self, generations: int) -> None:
        """evo at exactly the bytes of each --evo-points entry: a uniform option ('3b-g64') or an AutoScheme
        budget ('AutoScheme@3.5', from this study's frontier)."""
        frontier = self.results.get("frontier", {})
        for point in self.args.evo_points.split(","):
            if point.startswith("AutoScheme@"):
                name = next((n for n in frontier if n.startswith("AutoScheme allocation") and
                             n.endswith("@" + point.split("@")[1])), None)
                if name is None:
                    print(f"evo {point}: no AutoScheme row at that budget; run --stages autoscheme first", flush=True)
                    continue
                bits = 8 * frontier[name]["decoder_bytes"] / self.decoder_params
            else:
                bits = self.size_bits(self.uniform(point))[1]
            self.evo(bits, f"={point}", generations)


def main() -> None:
    args = parse()
    study = Study(args)
    stages = args.stages.split(",")
    study.load_table()
    if "validate" in stages:
        study.validate()
    if "frontier" in stages:
        study.frontier()
    elif "more" in stages:
        study.more()
    if "autoscheme" in stages:
        study.autoscheme()
    if "lmeval" in stages:
        study.lmeval()
    if "evo" in stages:
        study.evo_points(args.evo_generations)


if __name__ == "__main__":
    main()
