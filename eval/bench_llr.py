"""LLR vs uniform learning rate: fine-tuning SmolLM2-135M-Instruct (issue 5).

Runs (AdamW, the same data order per seed): uniform η, uniform 5η (LLR's largest LR given to every matrix: the
paper's safety check), and LLR (α of each matrix mapped onto [η, 5η]). Training text: WikiText-2 *valid*
(detokenized), blocks of 256 tokens, batch 4; eval loss: WikiText-2 raw *test*, 16 held-out windows of 256,
every 25 steps. Warm-up 10 %, cosine to 0.1×, α recomputed every 100 steps during the first 20 %, exactly
`compress finetune` (compress.training.train.finetune). Reported: eval loss vs step per run, and for each seed the
first step at which LLR's eval loss reaches uniform's final eval loss (speed-up = uniform's steps / that).

On CPU by default; `--device cuda` runs the same loop on a GPU (fp32, no TF32), where the whole matrix
(two η, AdamW and Muon) fits in minutes. Resumable: each finished run is stored in OUT/results.json; runs already there are skipped. Run alone:

    COMPRESS_DATA_DIR=../shared/data python eval/bench_llr.py --out eval/results/llr
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.provenance import versions  # noqa: E402
from compress.data import data_dir  # noqa: E402
from compress.training.train import FinetuneConfig, finetune  # noqa: E402
from compress.model import load_model, resolve_device  # noqa: E402


def runs(lr: float, steps: int, seeds: int, optimizer: str) -> list[tuple[str, FinetuneConfig]]:
    """Uniform and LLR for every seed first (the comparison asked for), then the uniform-5η safety check,
    so a cut-short run still answers the main question."""
    def config(seed: int, policy: str, rate: float) -> FinetuneConfig:
        return FinetuneConfig(lr=rate, lr_policy=policy, steps=steps, optimizer=optimizer, seed=seed, eval_every=25)

    out = []
    for seed in range(seeds):
        out += [(f"uniform-{optimizer}-seed{seed}", config(seed, "uniform", lr)),
                (f"llr-{optimizer}-seed{seed}", config(seed, "llr", lr))]
    return out + [(f"uniform5x-{optimizer}-seed{seed}", config(seed, "uniform", 5 * lr)) for seed in range(seeds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="eval/results/llr")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when present)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these run names (default: all)")
    args = parser.parse_args()
    import torch

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    root = data_dir(args.data_dir)
    base, tokenizer = load_model(None)  # loaded once; every run trains its own copy
    for name, config in runs(args.lr, args.steps, args.seeds, args.optimizer):
        if name in results["runs"] or (args.only is not None and name not in args.only):
            continue
        model = copy.deepcopy(base).to(device)
        result = finetune(model, tokenizer, config, root, progress=sys.stderr.isatty())
        log = result["lr_log"]
        results["runs"][name] = {"config": asdict(config), "eval": result["eval"], "train_loss": result["train_loss"],
                                 "seconds": result["seconds"], "groups": log["groups"],
                                 "lr_at": {str(s): log["lr"][s] for s in (0, config.steps // 10, config.steps // 2)},
                                 "alpha": log["alpha"], "device": torch.cuda.get_device_name(device)
                                 if device.startswith("cuda") else "cpu"}
        results["versions"] = versions()
        del model
        path.write_text(json.dumps(results))
        print(f"{name}: eval {result['eval'][0][1]:.4f} -> {result['eval'][-1][1]:.4f} in {result['seconds']:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
