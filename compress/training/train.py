"""`compress finetune`: causal-LM fine-tuning with layerwise learning rates (LLR) or a uniform LR.

A plain PyTorch loop: batches of `seq_len` tokens cut from the training text (WikiText-2 *valid* by default;
the raw *test* split is held out for the eval loss), AdamW or Muon+AdamW (compress.training.optim), and the LayerwiseLR
scheduler (compress.training.schedule) deciding every group's LR at every step. The output folder is an ordinary checkpoint
plus lr_log.json (every group's LR at every step, α at each recomputation), lr_heatmap.png, train_log.json
(train loss per step, eval loss every `eval_every` steps) and settings.json; it is written under a temporary
name and renamed at the end, so a failed run leaves nothing.

Healing (a model with layers removed, or one to be quantized): `lora_rank` trains peft LoRA adapters on every
Linear instead of the weights (LLR then sets each adapter's LR from the α of the base weight it adapts) and
saves the merged, ordinary checkpoint; `qlora` loads the base in bitsandbytes 4-bit NF4 first (CPU or CUDA)
and saves the adapter (adapter_config.json + adapter_model.safetensors, loadable with peft's
AutoPeftModelForCausalLM), since a merge into 4-bit weights would round the update away; with `merge` it also
merges the adapter into the float model it came from and saves that (what a recipe's next stage quantizes).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compress.config import check_settings, invalid, setting
from compress.errors import CompressError

TRAIN_DATA = {"wikitext2": "wikitext2-valid", "boolq-passages": "boolq-passages"}  # --data -> text source


@dataclass(frozen=True)
class FinetuneConfig:
    """`compress finetune`: training text, steps, the base LR and how it is spread over the weight matrices."""

    data: str = setting("wikitext2", "training text: wikitext2 (its valid split; the raw test split is held out "
                        "for the eval loss), boolq-passages, or a .txt/.jsonl file")
    steps: int = setting(200, "optimizer steps", minimum=1)
    lr: float = setting(5e-4, "base LR η (LLR groups get η·[r_min, r_max])")
    lr_policy: str = setting("auto", "auto: llr with LoRA/QLoRA, uniform for full fine-tuning (what won in each "
                             "here, eval/results/healing); llr (α mapped onto [1, 5]·η), tempbalance ([0.5, 1.5]), "
                             "sqrt, step (by rank), uniform")
    lr_ratio: tuple[float, ...] | None = setting(None, "r_min,r_max overriding the policy's, e.g. 1,3")
    optimizer: str = setting("adamw", "adamw, or muon (Muon for hidden matrices + AdamW)")
    batch_size: int = setting(4, "sequences per step", minimum=1)
    seq_len: int = setting(256, "tokens per sequence", minimum=2)
    warmup: float = setting(0.1, "warm-up, fraction of the steps", minimum=0, below=1)
    weight_decay: float = setting(0.1, "AdamW weight decay (norms and biases get none)", minimum=0)
    grad_clip: float = setting(1.0, "gradient-norm clip", flag=None)
    every: int = setting(100, "α recomputed every K steps ...", flag=None, minimum=1)
    until: float = setting(0.2, "... during this first fraction of training", flag=None)
    ramp: int = setting(50, "steps over which a group's LR moves to its new value", flag=None)
    eval_every: int = setting(25, "steps between eval losses", minimum=1)
    eval_windows: int = setting(16, "held-out WikiText-2 raw test windows of seq_len tokens for the eval loss",
                                flag=None, minimum=1)
    seed: int = setting(0, "seed of the batches and of the initialisation of adapters")
    lora_rank: int = setting(0, "train LoRA adapters of this rank (peft) on every Linear instead of the weights, "
                             "then merge them (healing a reduced model)", flag="--lora", metavar="RANK", minimum=0)
    qlora: bool = setting(False, "LoRA on a bitsandbytes 4-bit NF4 base (rank 16 unless --lora says); saves the "
                          "adapter")
    merge: bool = setting(False, "QLoRA: also merge the adapter into the float model it came from and save that "
                          "ordinary checkpoint (the adapter stays in adapter/), so it can be quantized next")
    device: str = setting("auto", "auto (CUDA when present), cpu, cuda or cuda:N; training runs in float32")

    def __post_init__(self) -> None:
        from compress.training import OPTIMIZERS
        from compress.training.lr_map import lr_policy

        check_settings(self)
        if self.qlora and self.lora_rank == 0:
            object.__setattr__(self, "lora_rank", 16)
        if self.lr_policy == "auto":  # LLR beat one LR healing with adapters and lost fine-tuning every weight
            object.__setattr__(self, "lr_policy", "llr" if self.lora_rank else "uniform")
        if not self.lr > 0:
            raise invalid(self, "lr", f"must be > 0, got {self.lr:g}")
        if self.lr_ratio is not None and len(self.lr_ratio) != 2:
            raise invalid(self, "lr_ratio", f"must be r_min,r_max, got {self.lr_ratio}")
        lr_policy(self.lr_policy, *self.ratio)  # unknown policy, r_min > r_max
        if self.optimizer not in OPTIMIZERS:
            raise invalid(self, "optimizer", f"{self.optimizer!r} is unknown; valid: {', '.join(OPTIMIZERS)}")

    @property
    def ratio(self) -> tuple[float | None, float | None]:
        """(r_min, r_max), or (None, None) for the policy's own."""
        return tuple(self.lr_ratio) if self.lr_ratio else (None, None)


def token_blocks(token_ids, seq_len: int, batch_size: int, what: str):
    """(blocks, seq_len) non-overlapping blocks of a 1-D token stream; refuses text too small for one batch."""
    blocks = token_ids.numel() // seq_len
    if blocks < batch_size:
        raise CompressError(f"{what} has {token_ids.numel()} tokens: too small for one batch of {batch_size} x "
                            f"{seq_len}")
    return token_ids[: blocks * seq_len].view(blocks, seq_len)


def batches(blocks, batch_size: int, steps: int, seed: int):
    """`steps` batches of rows of `blocks`, reshuffled (seeded) at every pass over the data."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.randperm(len(blocks), generator=generator).tolist()
        rows, order = order[:batch_size], order[batch_size:]
        yield blocks[rows]


def finetune(model, tokenizer, config: FinetuneConfig, data_root=None, progress: bool = True) -> dict:
    """Train `model` in place per `config`. Returns {"train_loss": [...], "eval": [(step, loss)], "lr_log": ...}."""
    import torch
    from tqdm.auto import tqdm

    from compress.data import calibration_texts, wikitext2_test_text
    from compress.training.schedule import LayerwiseLR, alpha_sources, param_groups
    from compress.training.lr_map import lr_policy
    from compress.training.optim import build_optimizer
    from compress.training.distributed import Parallel
    from compress.evaluation.perplexity import calibration_nll

    source = TRAIN_DATA.get(config.data, config.data)
    train_ids = tokenizer("\n\n".join(calibration_texts(source, data_root)), return_tensors="pt").input_ids[0]
    train = token_blocks(train_ids, config.seq_len, config.batch_size, f"the training text ({config.data})")
    test_ids = tokenizer(wikitext2_test_text(data_root), return_tensors="pt").input_ids[0]
    held_out = token_blocks(test_ids, config.seq_len, 1, "WikiText-2 test")[: config.eval_windows]

    torch.manual_seed(config.seed)
    optimizer = build_optimizer(config.optimizer, param_groups(model, config.weight_decay), config.lr,
                                config.weight_decay)
    scheduler = LayerwiseLR(optimizer, lr_policy(config.lr_policy, *config.ratio), config.steps,
                            round(config.warmup * config.steps), config.every, config.until, config.ramp,
                            sources=alpha_sources(model))
    parallel = Parallel(str(next(model.parameters()).device), config.batch_size)  # DDP under accelerate launch
    wrapped, stepper = parallel.prepare(model, optimizer)  # `model` is trained in place (the scheduler's groups)

    def evaluate() -> float:
        model.eval()
        value = calibration_nll(model, held_out)
        model.train()
        return value

    evals = [(0, evaluate())]
    losses = []
    started = time.perf_counter()
    bar = tqdm(batches(train, config.batch_size, config.steps, config.seed), total=config.steps,
               desc=f"finetune ({config.lr_policy}, {config.optimizer})", unit="step",
               disable=not (progress and parallel.is_main))
    model.train()
    for step, batch in enumerate(bar, start=1):
        batch = parallel.rows(batch).to(parallel.device)
        loss = wrapped(input_ids=batch, labels=batch, use_cache=False).loss
        parallel.backward(loss)
        parallel.clip(model.parameters(), config.grad_clip)
        stepper.step()
        scheduler.step()
        stepper.zero_grad(set_to_none=True)
        loss = parallel.mean(loss)
        losses.append(loss.item())
        if not torch.isfinite(loss):
            raise CompressError(f"the loss diverged at step {step} (lr {config.lr:g}, {config.lr_policy}): "
                                f"lower --lr")
        if step % config.eval_every == 0 or step == config.steps:
            evals.append((step, evaluate()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", eval=f"{evals[-1][1]:.3f}")
    model.eval()
    return {"train_loss": losses, "eval": evals, "seconds": round(time.perf_counter() - started, 1),
            "lr_log": scheduler.log()}


@dataclass(frozen=True)
class FinetuneResult:
    """What `compress finetune` trained: losses, the LR log, where it was saved."""

    out: Path
    train_loss: list[float]  # per step
    eval: list[tuple[int, float]]  # (step, held-out loss) every eval_every steps, step 0 first
    seconds: float
    lr_log: dict = field(repr=False)  # every group's LR at every step, α at each recomputation
    device: str = "cpu"
    rank: int = 0  # this process under accelerate launch (0: the main one, which wrote `out`)


def run_finetune(model_spec: str | None, config: FinetuneConfig = FinetuneConfig(), out: str | Path = "runs/finetune",
                 data_dir=None, progress: bool = True, overwrite: bool = False) -> FinetuneResult:
    """`compress finetune`: load, train, save an ordinary checkpoint with its logs into `out` (all or nothing)."""
    from compress.data import data_dir as resolve_data_dir
    from compress.training.heatmap import plot_lr_heatmap
    from compress.model import check_model_spec, resolve_device
    from compress.outputs import claim_output, staged_folder
    from compress.provenance import versions

    from compress.training.distributed import is_main, local_device, wait, world

    device = local_device(resolve_device(config.device))
    check_model_spec(model_spec)
    out = claim_output(out, overwrite=overwrite, source=model_spec) if is_main() else Path(out)
    root = resolve_data_dir(data_dir)
    if is_main():
        _preflight(model_spec, config, out, device)
    model, tokenizer = _load_for_training(model_spec, config, device)
    result = finetune(model, tokenizer, config, root, progress=progress)
    if not is_main():  # data-parallel: the main process writes the folder
        wait()
        return FinetuneResult(out, result["train_loss"], result["eval"], result["seconds"], result["lr_log"], device,
                              world()[0])
    with staged_folder(out) as tmp:
        if config.lora_rank and not config.qlora:
            model = model.merge_and_unload()  # LoRA folded into the weights: an ordinary checkpoint
        elif config.qlora and config.merge:
            model.save_pretrained(tmp / "adapter")
            model = merge_adapter(model_spec, tmp / "adapter", device)
        model.save_pretrained(tmp)  # QLoRA without merge: the adapter only
        tokenizer.save_pretrained(tmp)
        (tmp / "lr_log.json").write_text(json.dumps(result["lr_log"]))
        plot_lr_heatmap(result["lr_log"], tmp / "lr_heatmap.png")
        (tmp / "train_log.json").write_text(json.dumps(
            {"train_loss": result["train_loss"], "eval": result["eval"], "seconds": result["seconds"]}, indent=1))
        (tmp / "settings.json").write_text(json.dumps(
            {"command": "finetune", "model": model_spec or "SmolLM2-135M-Instruct (bundled default)",
             "config": asdict(config), "device": device, "processes": world()[1], "versions": versions()}, indent=1))
    wait()  # the others return once the folder is written
    return FinetuneResult(out, result["train_loss"], result["eval"], result["seconds"], result["lr_log"], device)


def merge_adapter(model_spec: str | None, adapter: Path, device: str):
    """The float model of `model_spec` with the (QLoRA) adapter saved in `adapter` merged into its weights: the
    update learnt against the NF4 base, applied to the float weights (QLoRA paper's deployment path)."""
    from peft import PeftModel

    from compress.model import load_model

    base, _ = load_model(model_spec, device=device)
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()


def _preflight(model_spec: str | None, config: FinetuneConfig, out: Path, device: str) -> None:
    """Print what the fine-tune needs; refuse when memory or disk clearly cannot hold it."""
    import os

    from compress.model.preflight import check_needs, finetune_needs

    lora = bool(config.lora_rank or config.qlora)
    check_needs("finetune", model_spec, out, device, lambda size, batch, gpu: finetune_needs(
        size, batch_size=batch, seq_len=config.seq_len, steps=config.steps, lora=lora, cores=os.cpu_count() or 1,
        gpu=gpu), config.batch_size, "--batch-size", "train LoRA adapters (--lora 16) or use --device cuda",
        vram_fix="lower --batch-size or --seq-len, or use --lora 16")


def _load_for_training(model_spec: str | None, config: FinetuneConfig, device: str = "cpu"):
    """(model, tokenizer) ready to train: float weights, or LoRA adapters on a float / 4-bit base."""
    from compress.model import is_quantized_folder, load_model, resolve_model_path
    from compress.model.check import check_load_report

    folder = Path(resolve_model_path(model_spec))  # checks the spec (check_model_spec) on the way
    if is_quantized_folder(folder):
        raise CompressError(f"{model_spec} is a quantized checkpoint: fine-tune (or --qlora) the float model it "
                            f"came from, e.g. one saved by `compress run --bits 16`")
    if not config.qlora:
        model, tokenizer = load_model(model_spec, device=device)
    else:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None or importlib.util.find_spec("peft") is None:
            raise CompressError("--qlora needs peft and bitsandbytes: pip install 'compress[finetune]'")
        from peft import prepare_model_for_kbit_training
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
        model, info = AutoModelForCausalLM.from_pretrained(str(folder), quantization_config=quant,
                                                           device_map=device, output_loading_info=True)
        check_load_report(info, str(folder))  # the same refusal as load_model: no random tensors
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if config.lora_rank:
        import torch

        torch.manual_seed(config.seed)  # the adapters' initialisation
        model = add_lora(model, config.lora_rank)
    return model, tokenizer


def add_lora(model, rank: int):
    """`model` wrapped with peft LoRA adapters of `rank` on every Linear (lora_alpha = 2·rank, no dropout)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise CompressError("--lora needs peft: pip install 'compress[finetune]'") from e
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
