"""auto-round AutoScheme on the same model, options and fused units as compress (issue 15's head-to-head).

One scoring pass of AutoScheme (`auto_round/auto_scheme`: delta loss |∂L/∂Ŵ ⊙ (W − Ŵ)| per Linear at each
candidate, exact knapsack, scales counted) for every budget at once; q/k/v and gate/up tied with
`shared_layers`; calibration text = WikiText-2 *validation* (never test), 16 x 256 tokens (its defaults).
Writes OUT/autoscheme.json: per budget its allocation as compress unit options, its own average bits and the
wall time. With --quantize B1,B2: no scoring; auto-round's own rounding (--iters 0: its optimised RTN;
--iters N: SignRound) of the saved allocation at each budget, exported as GPTQ (`auto_gptq`) into
WORK/autoround-B-itersN and measured like eval/mixed_units_checkpoint.py's folders (stored weights unpacked,
the same test windows and KL rows): OUT/autoscheme.json's "autoround_rounding".

    pip install auto-round==0.16.1     # a benchmark reference, not a compress dependency
    COMPRESS_DATA_DIR=../shared/data python eval/autoscheme_lane.py --out eval/results/mixed_units
    COMPRESS_DATA_DIR=../shared/data python eval/autoscheme_lane.py --quantize 3.25,3.5,4.0,4.5 --iters 0
    COMPRESS_DATA_DIR=../shared/data python eval/autoscheme_lane.py --frontier "uniform 3b-g64" --iters 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.data import calibration_texts, data_dir  # noqa: E402
from compress.model import load_model, named_linears  # noqa: E402
from compress.model.units import model_units, unit_name  # noqa: E402
from compress.plan import Option  # noqa: E402
from compress.provenance import versions  # noqa: E402
from compress.quant.autoround import CPU_ROUNDING, layer_config  # noqa: E402

BUDGETS = [3.25, 3.5, 4.0, 4.5]  # with 3/4/8-bit options nothing reaches 3.0 (3-bit per channel is 3.07)
GROUPS = (32, 64, 128, -1)


def calibration_file(work: Path) -> str:
    """WikiText-2 validation paragraphs as a JSON list of texts (auto-round reads a local .json offline)."""
    text = " ".join(calibration_texts("wikitext2-valid", data_dir(None)))
    rows = [text[i:i + 2000] for i in range(0, len(text) - 2000, 2000)]  # ~450 tokens each: none is dropped as short
    path = work / "calib.json"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return str(path)


def unit_allocation(layer_config: dict) -> dict[str, str]:
    """auto-round's {module name: {bits, group_size, sym, ...}} -> {unit key: option label}; checks that
    the shards of each fused unit agree (shared_layers)."""
    out: dict[str, str] = {}
    for name, cfg in layer_config.items():
        if ".layers." not in name or cfg.get("bits", 16) >= 16:
            continue
        layer = int(name.split(".layers.")[1].split(".")[0])
        group = cfg.get("group_size")
        label = Option(int(cfg["bits"]), None if group in (-1, 0, None) else int(group), bool(cfg.get("sym", True))).label
        key = f"{layer}.{unit_name(name)}"
        if out.setdefault(key, label) != label:
            raise ValueError(f"AutoScheme gave the shards of {key} different schemes: {out[key]} vs {label}")
    return out


def rounding_jobs(args, lane: dict) -> list[tuple[str, object]]:
    """(row name, layer_config or a {unit: option} allocation) for each --quantize budget (AutoScheme's saved
    allocation) and each --frontier entry of results.json (compress's own allocations, uniform options)."""
    jobs = [(f"{float(b)} iters={args.iters}", lane["budgets"][str(float(b))]["layer_config"])
            for b in filter(None, args.quantize.split(","))]
    frontier = json.loads((Path(args.out) / "results.json").read_text())["frontier"]
    return jobs + [(f"{name} iters={args.iters}", frontier[name]["allocation"]) for name in args.frontier]


def autoround_rounding(args, lane: dict, path: Path) -> None:
    """auto-round quantizes each job's allocation itself; each folder measured by mixed_units_checkpoint.Bench."""
    from auto_round import AutoRound
    from mixed_units_checkpoint import Bench

    work = Path(args.work)
    bench = Bench(json.loads((Path(args.out) / "results.json").read_text())["meta"]["args"])
    for name, cfg in rounding_jobs(args, lane):
        out, seconds = work / ("autoround-" + name.replace(" ", "_").replace("/", "-").replace("@", "at")), None
        if not (args.reuse and list(out.rglob("config.json"))):
            model, tokenizer = load_model(args.model)
            if isinstance(next(iter(cfg.values())), str):  # a compress allocation: {unit key: option label}
                cfg = layer_config({u: Option.parse(cfg[u.key]) for u in model_units(model)})
            started = time.perf_counter()
            rounder = AutoRound(model, tokenizer, scheme="W4A16", layer_config=cfg, iters=args.iters,
                                nsamples=args.nsamples, seqlen=args.seqlen, dataset=calibration_file(work),
                                **CPU_ROUNDING)  # fp32 on every CPU, as compress rounds
            rounder.quantize_and_save(str(out), format="auto_gptq")
            seconds = round(time.perf_counter() - started, 1)
        folder = next(out.rglob("config.json")).parent  # auto-round saves into a subfolder named after the model
        row = {"iters": args.iters, "nsamples": args.nsamples, "seqlen": args.seqlen, "autoround_seconds": seconds,
               **bench.measure(folder)}
        lane.setdefault("autoround_rounding", {})[name] = row
        path.write_text(json.dumps(lane, indent=1, default=str))
        print(f"auto-round rounding, {name}: {row}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--out", default="eval/results/mixed_units")
    p.add_argument("--work", default="/tmp/mixed_units")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--widths", default="3,4,8", help="bits of the options (compress's default: 3,4,8)")
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--quantize", default="", help="budgets whose saved allocation auto-round rounds itself")
    p.add_argument("--iters", type=int, default=0, help="with --quantize: 0 = optimised RTN, N = SignRound steps")
    p.add_argument("--frontier", action="append", default=[],
                   help="a results.json frontier entry (e.g. compress's default) for auto-round to round too")
    p.add_argument("--reuse", action="store_true", help="with --quantize: measure folders already under --work")
    args = p.parse_args()
    if args.quantize or args.frontier:
        path = Path(args.out) / "autoscheme.json"
        autoround_rounding(args, json.loads(path.read_text()), path)
        return
    from auto_round import __version__ as ar_version
    from auto_round.auto_scheme.gen_auto_scheme import AutoScheme, GenScheme
    from auto_round.schemes import QuantizationScheme

    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(args.model)
    names = [n for n, _, m in named_linears(model)]
    widths = {m.weight.shape[1] for _, _, m in named_linears(model)}
    pairs = [(int(b), g) for b in args.widths.split(",") for g in GROUPS if g == -1 or all(w % g == 0 for w in widths)]
    options = [QuantizationScheme(bits=b, group_size=g, sym=True, data_type="int", act_bits=16) for b, g in pairs]
    budgets = [float(b) for b in args.budgets.split(",")]
    scheme = AutoScheme(avg_bits=budgets, options=options, nsamples=args.nsamples, seqlen=args.seqlen,
                        shared_layers=[["q_proj", "k_proj", "v_proj"], ["gate_proj", "up_proj"]],
                        dataset=calibration_file(work), device_map="cpu", enable_torch_compile=False,
                        low_cpu_mem_usage=False)  # its offload reloads blocks from model files on disk
    started = time.perf_counter()
    generator = GenScheme(scheme, model, names, {}, scheme.dataset, device_map="cpu", tokenizer=tokenizer,
                          enable_torch_compile=False)
    configs = generator.get_layer_config()
    seconds = time.perf_counter() - started
    result = {"auto_round": ar_version, "versions": versions(), "seconds": round(seconds, 1),
              "options": [f"W{b}G{g}" for b, g in pairs], "nsamples": args.nsamples, "seqlen": args.seqlen,
              "note": "group sizes that do not divide every input width are left out (auto-round applies one "
                      "option list to all layers)",
              "budgets": {str(b): {"allocation": unit_allocation(cfg), "layer_config": cfg}
                          for b, cfg in configs.items()}}
    (out / "autoscheme.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"AutoScheme: {len(budgets)} budgets in {seconds:.0f} s")


if __name__ == "__main__":
    main()
