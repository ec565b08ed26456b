"""Healing after layer removal: no healing vs LoRA / full fine-tuning, each with a uniform LR and with LLR
(issue 17, item 5).

SmolLM2-135M-Instruct with 25 % of its decoder layers removed by Block Influence (`compress run --bits 16
--skip 0.25`: 8 of 30), then healed with one fixed budget: `--steps` AdamW steps of 4 x 256 tokens of WikiText-2
*valid* (the training text; the eval loss is 16 held-out windows of 256 tokens of WikiText-2 raw *test*, every
10 steps). Arms, per seed (the same batches for every arm of a seed):

    lora-uniform   LoRA rank 16 on every Linear, one LR η_lora          (compress finetune --lora 16 --lr-policy uniform)
    lora-llr       the same, each adapter's LR from its base weight's α (LLR, [η, 5η])
    full-uniform   every weight trained, one LR η_full                  (compress finetune --lr-policy uniform)
    full-llr       the same with LLR
    *-uniformmean  control: uniform at the mean LR LLR gave the matrices after the warm-up (seed 0's run), so
                   "LLR wins" cannot be just "a larger average LR wins"

After training (LoRA merged into the weights) each healed model's perplexity on 4 WikiText-2 test windows of
2048 tokens (the windows `compress run` measures) is recorded beside the removed and the full model's, and the
healed model is evaluated with lm-eval at once (the 8 default tasks, `--limit` documents each, recovery against
the full model; `--no-lmeval` skips it, `--stage lmeval` evaluates the healed folders still under --work later).
Resumable: each finished run is stored in OUT/results.json.
Run alone (two torch jobs on 2 cores slow each other many-fold):

    COMPRESS_DATA_DIR=../shared/data python eval/bench_heal.py --out eval/results/healing            # train
    COMPRESS_DATA_DIR=../shared/data python eval/bench_heal.py --out eval/results/healing --stage lmeval
    python eval/report_heal.py --out eval/results/healing
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.data import data_dir, wikitext2_test_text  # noqa: E402
from compress.provenance import versions  # noqa: E402
from compress.training.train import FinetuneConfig, add_lora, finetune  # noqa: E402

PPL_WINDOWS = 4  # of 2048 tokens, as compress run's before/after


def arms(steps: int, seeds: int, lora_lr: float, full_lr: float) -> list[tuple[str, FinetuneConfig]]:
    """Every arm of seed 0 first, so a cut-short benchmark still answers the main question."""
    out = []
    for seed in range(seeds):
        for kind, rank, lr in (("lora", 16, lora_lr), ("full", 0, full_lr)):
            for policy in ("uniform", "llr"):
                out.append((f"{kind}-{policy}-seed{seed}", FinetuneConfig(
                    lr=lr, lr_policy=policy, steps=steps, seed=seed, lora_rank=rank, eval_every=10, device="cpu")))
    return out


def mean_lr_arms(results: dict, steps: int, seeds: int) -> list[tuple[str, FinetuneConfig]]:
    """The control for "LLR only raises the LR": uniform at the mean LR LLR gave the matrices right after the
    warm-up (step steps/10, schedule factor 1) in seed 0, for each kind whose LLR run exists."""
    import statistics

    out = []
    for kind, rank in (("lora", 16), ("full", 0)):
        llr = results["runs"].get(f"{kind}-llr-seed0")
        if llr is None:
            continue
        lr = statistics.mean(llr["lr_at"][str(steps // 10)])
        out += [(f"{kind}-uniformmean-seed{seed}", FinetuneConfig(
            lr=lr, lr_policy="uniform", steps=steps, seed=seed, lora_rank=rank, eval_every=10, device="cpu"))
            for seed in range(seeds)]
    return out


def removed_folder(path: Path, root) -> Path:
    """The removed model (BI, 25 %), made once with `compress run --bits 16 --skip 0.25`."""
    if not (path / "model.safetensors").is_file():
        from compress import api
        from compress.depth.choose import DepthConfig
        from compress.bits.planner import BitsConfig

        api.run(None, api.RunConfig(bits=BitsConfig(bits="16"), depth=DepthConfig(skip=0.25)), out=path,
                data_dir=root)
    return path


def heal(base, tokenizer, config: FinetuneConfig, root, test_ids) -> tuple[dict, object]:
    """Train a copy of `base` per `config`; (record, healed float model with LoRA merged)."""
    from compress.evaluation.perplexity import perplexity

    model = copy.deepcopy(base)
    if config.lora_rank:
        model = add_lora(model, config.lora_rank)
    result = finetune(model, tokenizer, config, root, progress=sys.stderr.isatty())
    if config.lora_rank:
        model = model.merge_and_unload()
    ppl = perplexity(model, test_ids, max_windows=PPL_WINDOWS, progress=False)
    log = result["lr_log"]
    return {"config": asdict(config), "eval": result["eval"], "train_loss": result["train_loss"],
            "seconds": result["seconds"], "ppl": ppl.ppl, "groups": log["groups"], "alpha": log["alpha"],
            "lr_at": {str(s): log["lr"][s] for s in (0, config.steps // 10, config.steps // 2)}}, model


def train_stage(args, results: dict, path: Path) -> None:
    from compress.evaluation.perplexity import perplexity
    from compress.model import load_model

    root = data_dir(args.data_dir)
    removed = removed_folder(Path(args.work) / "removed", root)
    base, tokenizer = load_model(str(removed))
    test_ids = tokenizer(wikitext2_test_text(root), return_tensors="pt").input_ids[0]
    if "reference" not in results:
        full, _ = load_model(None)
        results["reference"] = {
            "full_ppl": perplexity(full, test_ids, max_windows=PPL_WINDOWS, progress=False).ppl,
            "removed_ppl": perplexity(base, test_ids, max_windows=PPL_WINDOWS, progress=False).ppl,
            "removed_layers": json.loads((removed / "stats.json").read_text())["layers"]["removed"]}
        del full
    if args.lmeval and "removed" not in results.get("lmeval", {}):
        lmeval_one(args, results, path, "removed")
    for name, config in arms(args.steps, args.seeds, args.lora_lr, args.full_lr) + mean_lr_arms(
            results, args.steps, args.seeds):
        if name in results["runs"] or (args.only and name not in args.only):
            continue
        record, model = heal(base, tokenizer, config, root, test_ids)
        model.save_pretrained(Path(args.work) / name)
        tokenizer.save_pretrained(Path(args.work) / name)
        results["runs"][name] = record
        results["versions"] = versions()
        path.write_text(json.dumps(results))
        print(f"{name}: eval {record['eval'][0][1]:.4f} -> {record['eval'][-1][1]:.4f}, ppl {record['ppl']:.2f}, "
              f"{record['seconds']:.0f} s", flush=True)
        if args.lmeval:  # at once: the healed folders under --work do not outlive the machine
            lmeval_one(args, results, path, name)


def baseline(args) -> str:
    """lm-eval's baseline: --full, or the bundled SmolLM2 .gguf (its scores are kept in the user cache)."""
    from compress.model.gguf import default_gguf_path

    return args.full or str(default_gguf_path())


def lmeval_config(args):
    from compress.evaluation.lmeval import EvalConfig

    return EvalConfig(limit=args.limit, max_length=2048)


def lmeval_one(args, results: dict, path: Path, name: str) -> None:
    """lm-eval (the 8 default tasks, --limit docs) of --work/NAME against the full model, stored in results."""
    from compress import api
    from compress.evaluation.lmeval import mean_recovery

    work = Path(args.work)
    result = api.evaluate(str(work / name), lmeval_config(args), baseline=baseline(args),
                          data_dir=args.data_dir, out=work / f"eval-{name}", overwrite=True)
    record = result.to_dict() if hasattr(result, "to_dict") else dict(result.__dict__)
    mean, count = mean_recovery(record)
    results.setdefault("lmeval", {})[name] = {"mean_recovery": mean, "tasks": count, "eval": record}
    path.write_text(json.dumps(results))
    print(f"{name}: mean recovery {mean:.1f} % over {count} tasks", flush=True)


def lmeval_stage(args, results: dict, path: Path) -> None:
    """lm-eval of the removed and every healed model still under --work that has no lm-eval record yet."""
    work = Path(args.work)
    for name in ["removed"] + [n for n in results["runs"] if (work / n).is_dir()]:
        if name not in results.get("lmeval", {}) and not (args.only and name not in args.only):
            lmeval_one(args, results, path, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="eval/results/healing")
    parser.add_argument("--work", default="/tmp/heal", help="removed and healed model folders (~400 MB each)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--stage", default="train", choices=("train", "lmeval"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--lora-lr", type=float, default=5e-4)
    parser.add_argument("--full-lr", type=float, default=1e-4)
    parser.add_argument("--limit", type=int, default=200, help="lm-eval documents per task")
    parser.add_argument("--full", default=None, help="the full model, lm-eval's baseline (default: the bundled SmolLM2 "
                        ".gguf; its scores are cached after the first evaluation)")
    parser.add_argument("--no-lmeval", dest="lmeval", action="store_false",
                        help="train only (default: lm-eval each healed model right after its training)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    (train_stage if args.stage == "train" else lmeval_stage)(args, results, path)


if __name__ == "__main__":
    main()
