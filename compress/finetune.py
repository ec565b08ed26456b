"""`compress finetune`: causal-LM fine-tuning with layerwise learning rates (LLR) or a uniform LR.

A plain PyTorch loop: batches of `seq_len` tokens cut from the training text (WikiText-2 *valid* by default;
the raw *test* split is held out for the eval loss), AdamW or Muon+AdamW (compress.optim), and the LayerwiseLR
scheduler (compress.llr) deciding every group's LR at every step. The output folder is an ordinary checkpoint
plus lr_log.json (every group's LR at every step, α at each recomputation), lr_heatmap.png, train_log.json
(train loss per step, eval loss every `eval_every` steps) and settings.json; it is written under a temporary
name and renamed at the end, so a failed run leaves nothing.

Healing (a model with layers removed, or one to be quantized): `lora_rank` trains peft LoRA adapters on every
Linear instead of the weights (LLR then sets each adapter's LR from the α of the base weight it adapts) and
saves the merged, ordinary checkpoint; `qlora` loads the base in bitsandbytes 4-bit NF4 first (CPU or CUDA)
and saves the adapter (adapter_config.json + adapter_model.safetensors, loadable with peft's
AutoPeftModelForCausalLM), since a merge into 4-bit weights would round the update away.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from compress.errors import CompressError

TRAIN_DATA = {"wikitext2": "wikitext2-valid", "boolq-passages": "boolq-passages"}  # --data -> text source


@dataclass(frozen=True)
class FinetuneConfig:
    data: str = "wikitext2"  # wikitext2 (its valid split), boolq-passages, or a .txt/.jsonl file
    steps: int = 200
    lr: float = 5e-4  # η; LLR groups get η·[r_min, r_max]
    lr_policy: str = "llr"  # compress.lr_policy.LR_POLICIES
    r_min: float | None = None  # None: the policy's own (LLR: 1, 5)
    r_max: float | None = None
    optimizer: str = "adamw"  # adamw | muon
    batch_size: int = 4
    seq_len: int = 256
    warmup: float = 0.1  # fraction of steps
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    every: int = 100  # α recomputed every K steps ...
    until: float = 0.2  # ... during this first fraction of training
    ramp: int = 50  # steps over which a group's LR moves to its new value
    eval_every: int = 25
    eval_windows: int = 16  # held-out WikiText-2 raw test windows of seq_len tokens for the eval loss
    seed: int = 0
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank (peft) instead of the weights
    qlora: bool = False  # LoRA on a base loaded in bitsandbytes 4-bit NF4 (rank 16 unless lora_rank says)

    def __post_init__(self) -> None:
        if self.lora_rank < 0:
            raise CompressError(f"--lora must be a rank >= 1, got {self.lora_rank}")
        if self.qlora and self.lora_rank == 0:
            object.__setattr__(self, "lora_rank", 16)
        from compress.lr_policy import lr_policy
        from compress.optim import OPTIMIZERS

        if self.steps <= 0:
            raise CompressError(f"--steps must be > 0, got {self.steps}")
        if not self.lr > 0:
            raise CompressError(f"--lr must be > 0, got {self.lr:g}")
        lr_policy(self.lr_policy, self.r_min, self.r_max)  # unknown policy, r_min > r_max
        if self.optimizer not in OPTIMIZERS:
            raise CompressError(f"unknown --optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        for name in ("batch_size", "eval_every", "eval_windows", "every"):
            if getattr(self, name) < 1:
                raise CompressError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise CompressError(f"--seq-len must be >= 2, got {self.seq_len}")
        if not 0 <= self.warmup < 1:
            raise CompressError(f"--warmup is a fraction of the steps in [0, 1), got {self.warmup:g}")


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
    from compress.llr import LayerwiseLR, alpha_sources, param_groups
    from compress.lr_policy import lr_policy
    from compress.optim import build_optimizer
    from compress.perplexity import calibration_nll

    source = TRAIN_DATA.get(config.data, config.data)
    train_ids = tokenizer("\n\n".join(calibration_texts(source, data_root)), return_tensors="pt").input_ids[0]
    train = token_blocks(train_ids, config.seq_len, config.batch_size, f"the training text ({config.data})")
    test_ids = tokenizer(wikitext2_test_text(data_root), return_tensors="pt").input_ids[0]
    held_out = token_blocks(test_ids, config.seq_len, 1, "WikiText-2 test")[: config.eval_windows]

    torch.manual_seed(config.seed)
    optimizer = build_optimizer(config.optimizer, param_groups(model, config.weight_decay), config.lr,
                                config.weight_decay)
    scheduler = LayerwiseLR(optimizer, lr_policy(config.lr_policy, config.r_min, config.r_max), config.steps,
                            round(config.warmup * config.steps), config.every, config.until, config.ramp,
                            sources=alpha_sources(model))
    device = next(model.parameters()).device

    def evaluate() -> float:
        model.eval()
        value = calibration_nll(model, held_out)
        model.train()
        return value

    evals = [(0, evaluate())]
    losses = []
    started = time.perf_counter()
    bar = tqdm(batches(train, config.batch_size, config.steps, config.seed), total=config.steps,
               desc=f"finetune ({config.lr_policy}, {config.optimizer})", unit="step", disable=not progress)
    model.train()
    for step, batch in enumerate(bar, start=1):
        batch = batch.to(device)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
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


def run_finetune(model_spec: str | None, out: Path, config: FinetuneConfig = FinetuneConfig(), data_dir=None,
                 progress: bool = True, device: str = "auto") -> dict:
    """`compress finetune`: load, train, save an ordinary checkpoint with its logs into `out` (all or nothing).
    device: auto (CUDA when present), cpu, cuda[:N]; training runs in float32 either way."""
    from compress.api import versions
    from compress.data import data_dir as resolve_data_dir
    from compress.outputs import check_writable, staged_folder
    from compress.model import resolve_device
    from compress.plot import plot_lr_heatmap

    device = resolve_device(device)
    out = Path(out)
    if out.exists():
        raise CompressError(f"{out} already exists: choose a new --out")
    check_writable(out)
    root = resolve_data_dir(data_dir)
    model, tokenizer = _load_for_training(model_spec, config, device)
    result = finetune(model, tokenizer, config, root, progress=progress)
    with staged_folder(out) as tmp:
        if config.lora_rank and not config.qlora:
            model = model.merge_and_unload()  # LoRA folded into the weights: an ordinary checkpoint
        model.save_pretrained(tmp)  # QLoRA: the adapter only
        tokenizer.save_pretrained(tmp)
        (tmp / "lr_log.json").write_text(json.dumps(result["lr_log"]))
        plot_lr_heatmap(result["lr_log"], tmp / "lr_heatmap.png")
        (tmp / "train_log.json").write_text(json.dumps(
            {"train_loss": result["train_loss"], "eval": result["eval"], "seconds": result["seconds"]}, indent=1))
        (tmp / "settings.json").write_text(json.dumps(
            {"command": "finetune", "model": model_spec or "SmolLM2-135M-Instruct (bundled default)",
             "config": asdict(config), "device": device, "versions": versions()}, indent=1))
    return result


def _load_for_training(model_spec: str | None, config: FinetuneConfig, device: str = "cpu"):
    """(model, tokenizer) ready to train: float weights, or LoRA adapters on a float / 4-bit base."""
    from compress.model import check_model_spec, is_quantized_folder, load_model, resolve_model_path

    check_model_spec(model_spec)
    folder = Path(resolve_model_path(model_spec))
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
        model = AutoModelForCausalLM.from_pretrained(str(folder), quantization_config=quant,
                                                     device_map=device)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if config.lora_rank:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as e:
            raise CompressError("--lora needs peft: pip install 'compress[finetune]'") from e
        model = get_peft_model(model, LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank,
                                                 target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM"))
    return model, tokenizer
