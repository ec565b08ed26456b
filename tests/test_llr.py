"""LLR parameter groups, the LayerwiseLR scheduler, Muon+AdamW, the HF Trainer and `compress finetune`."""

import json

import pytest
import torch

from compress.cli import main
from compress.training.schedule import LayerwiseLR, group_alphas, param_groups
from compress.training.lr_map import lr_multipliers, lr_policy, schedule_factor
from compress.training.optim import MuonWithAdamW, build_optimizer
from conftest import tiny_model


def model64(**overrides):
    """hidden 64: q/o/gate/up/down have >= 50 eigenvalues, k/v (32 x 64) do not."""
    return tiny_model("llama", hidden_size=64, intermediate_size=128, **overrides)


def test_groups_one_per_matrix_embedding_and_head_apart_small_ones_untuned():
    model = model64()
    groups = param_groups(model, weight_decay=0.1)
    kinds = {g["name"]: g["kind"] for g in groups}
    assert kinds["model.embed_tokens"] == kinds["lm_head"] == "max"
    assert kinds["model.layers.0.self_attn.q_proj"] == kinds["model.layers.3.mlp.down_proj"] == "tuned"
    assert "model.layers.0.self_attn.k_proj" not in kinds  # 32 eigenvalues < 50
    tuned = [g for g in groups if g["kind"] == "tuned"]
    assert len(tuned) == 4 * 5 and all(len(g["params"]) == 1 for g in tuned)
    no_decay = next(g for g in groups if g["name"].startswith("untuned (norms"))
    assert no_decay["weight_decay"] == 0 and all(p.dim() == 1 for p in no_decay["params"])
    small = next(g for g in groups if g["name"].startswith("untuned (small"))
    assert small["weight_decay"] == 0.1 and len(small["params"]) == 4 * 2  # k, v of 4 layers
    # every trainable parameter in exactly one group
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_tied_embedding_is_one_group():
    groups = param_groups(model64(tie_word_embeddings=True))
    embedding = [g for g in groups if g["kind"] == "max"]
    assert len(embedding) == 1 and embedding[0]["name"] == "model.embed_tokens (tied to the LM head)"


def test_scheduler_lr_is_eta_times_alpha_multiplier_times_schedule():
    model = model64()
    eta, total, warmup = 1e-3, 40, 4
    optimizer = build_optimizer("adamw", param_groups(model), eta)
    scheduler = LayerwiseLR(optimizer, lr_policy("llr"), total, warmup)
    groups = optimizer.param_groups
    alphas = group_alphas(groups)
    tuned = sorted(alphas)
    mult = dict(zip(tuned, lr_multipliers([alphas[p] for p in tuned], lr_policy("llr"))))
    for step in range(1, 30):
        optimizer.step()
        scheduler.step()
        factor = schedule_factor(step, total, warmup)
        for p, group in enumerate(groups):
            want = {"tuned": eta * mult.get(p, 0), "max": 5 * eta, "untuned": eta}[group["kind"]] * factor
            assert group["lr"] == pytest.approx(want), (step, group["name"])
    assert max(mult.values()) == pytest.approx(5) and min(mult.values()) == pytest.approx(1)
    log = scheduler.log()
    assert len(log["lr"]) == 30 and len(log["groups"]) == len(groups) and log["alpha"][0]["step"] == 0


def test_recomputed_alpha_moves_each_lr_linearly_over_the_ramp():
    model = model64()
    optimizer = build_optimizer("adamw", param_groups(model), 1e-3)
    scheduler = LayerwiseLR(optimizer, lr_policy("llr"), total_steps=100, warmup_steps=0, every=10, until=0.1,
                            ramp=4)  # recomputes at 0 and 10
    q = next(p for p, g in enumerate(optimizer.param_groups) if g["name"] == "model.layers.0.self_attn.q_proj")
    for _ in range(9):
        optimizer.step()  # no gradients: a no-op that keeps torch's step order
        scheduler.step()
    before = scheduler.mult[q]
    with torch.no_grad():  # a heavy-tailed spectrum for q_proj: its α drops, so does its LR
        weight = optimizer.param_groups[q]["params"][0]
        weight.copy_(torch.linalg.qr(torch.randn(64, 64))[0] @ torch.diag(torch.logspace(0, 3, 64)))
    factors = []
    for step in range(10, 16):
        optimizer.step()
        scheduler.step()
        factors.append(optimizer.param_groups[q]["lr"] / (1e-3 * schedule_factor(step, 100, 0)))
    after = scheduler.mult[q]
    assert after < before and len(scheduler.alpha_log) == 2
    assert factors[0] == pytest.approx(before)  # step 10: the ramp starts where the LR was
    assert factors[2] == pytest.approx((before + after) / 2)  # half-way at step 12
    assert factors[4] == factors[5] == pytest.approx(after)


def test_heatmap_labels_name_the_layer_and_matrix_not_the_wrappers():
    from compress.training.heatmap import short_name

    assert short_name("base_model.model.model.layers.13.mlp.up_proj") == "layer 13 mlp.up_proj"
    assert short_name("model.layers.0.self_attn.q_proj") == "layer 0 self_attn.q_proj"
    assert short_name("model.embed_tokens") == "model.embed_tokens"


def test_muon_for_hidden_matrices_adamw_for_the_rest():
    model = model64()
    optimizer = build_optimizer("muon", param_groups(model), 1e-3)
    assert isinstance(optimizer, MuonWithAdamW)
    muon, adamw = optimizer.inner
    assert type(muon).__name__ == "Muon" and all(g["kind"] == "tuned" for g in muon.param_groups)
    assert {g["kind"] for g in adamw.param_groups} == {"max", "untuned"}
    scheduler = LayerwiseLR(optimizer, lr_policy("llr"), 10, 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 256, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    scheduler.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    # the scheduler's LRs reach the inner optimizers (shared group dicts)
    assert all(any(g is h for h in optimizer.param_groups) for g in muon.param_groups + adamw.param_groups)
    assert set(optimizer.state_dict()) == {"inner"}


def test_inside_the_hugging_face_trainer(tmp_path):
    """Trainer(optimizers=(optimizer, scheduler)): the Trainer steps the scheduler once per optimizer step,
    so every group's LR follows the same schedule as in a plain loop."""
    from transformers import Trainer, TrainingArguments

    model = model64()
    optimizer = build_optimizer("adamw", param_groups(model), 1e-3)
    scheduler = LayerwiseLR(optimizer, lr_policy("llr"), total_steps=6, warmup_steps=2)
    data = [{"input_ids": row, "labels": row} for row in torch.randint(0, 256, (12, 16))]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=2, report_to=[],
                             save_strategy="no", use_cpu=True, logging_steps=1, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, scheduler)).train()
    assert len(scheduler.history) == 7  # step 0 + 6 optimizer steps
    max_group = next(p for p, g in enumerate(optimizer.param_groups) if g["kind"] == "max")
    assert [h[max_group] for h in scheduler.history] == pytest.approx(
        [5e-3 * schedule_factor(t, 6, 2) for t in range(7)])


def test_finetune_command_writes_a_checkpoint_and_its_lr_log(tiny_folder, data_dir, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(tiny_folder), "--data-dir", str(data_dir), "--steps", "4",
                 "--batch-size", "2", "--seq-len", "32", "--eval-every", "2", "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "lr_log.json", "lr_heatmap.png", "train_log.json",
            "settings.json"} <= {p.name for p in out.iterdir()}
    log = json.loads((out / "lr_log.json").read_text())
    assert len(log["lr"]) == 5 and log["policy"]["map"] == "uniform"  # auto: one LR when every weight trains
    train = json.loads((out / "train_log.json").read_text())
    assert len(train["train_loss"]) == 4 and [e[0] for e in train["eval"]] == [0, 2, 4]
    from transformers import AutoModelForCausalLM

    tuned = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(tiny_folder)
    assert not torch.equal(tuned.lm_head.weight, original.lm_head.weight)
    assert "eval loss" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "steps (--steps) must be >= 1, got 0"),
    (["--lr-policy", "magic"], "valid: llr, tempbalance"),
    (["--optimizer", "sgd"], "valid: adamw, muon"),
    (["--lr-ratio", "5,1"], "r_min <= r_max"),
    (["--lr-ratio", "5"], "r_min,r_max"),
    (["--seq-len", "300000"], "too small for one batch"),  # 3 blocks of the byte-tokenized valid split < 4
    (["--batch-size", "100000"], "lower --batch-size to"),  # the preflight: memory for the activations
    (["--device", "tpu"], "valid: auto, cpu, cuda, cuda:N"),
    pytest.param(["--device", "cuda"], "torch sees no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
])
def test_bad_finetune_input_is_one_line_and_writes_nothing(tiny_folder, data_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["finetune", "--model", str(tiny_folder), "--data-dir", str(data_dir), "--seq-len", "32",
                 "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().splitlines()[-1].startswith("compress: error:")
    assert not out.exists()


def _folder64(tmp_path):
    from conftest import byte_tokenizer

    folder = tmp_path / "tiny64"
    model64().save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def test_lora_healing_merges_into_an_ordinary_checkpoint_with_llr_on_the_adapters(data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from compress.training.train import FinetuneConfig, _load_for_training
    from compress.training.schedule import alpha_sources, param_groups

    folder = _folder64(tmp_path)
    model, _ = _load_for_training(str(folder), FinetuneConfig(lora_rank=4))
    groups = param_groups(model)
    q = next(g for g in groups if g["name"].endswith("layers.0.self_attn.q_proj"))
    assert q["kind"] == "tuned" and [p.shape for p in q["params"]] == [(4, 64), (64, 4)]  # A and B together
    assert all(p.requires_grad for g in groups for p in g["params"])
    base = alpha_sources(model)[q["name"]]()  # α comes from the frozen base weight
    assert torch.equal(base, AutoModelForCausalLM.from_pretrained(folder).model.layers[0].self_attn.q_proj.weight)

    out = tmp_path / "healed"
    assert main(["finetune", "--model", str(folder), "--data-dir", str(data_dir), "--steps", "3", "--lora", "4",
                 "--batch-size", "2", "--seq-len", "32", "--eval-every", "3", "--lr", "1e-2", "--out", str(out)]) == 0
    healed = AutoModelForCausalLM.from_pretrained(out)  # merged: no peft needed to load it
    original = AutoModelForCausalLM.from_pretrained(folder)
    assert not any("lora" in n for n, _ in healed.named_parameters())
    assert not torch.equal(healed.model.layers[0].self_attn.q_proj.weight,
                           original.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(healed.model.norm.weight, original.model.norm.weight)  # frozen under LoRA
    log = json.loads((out / "lr_log.json").read_text())
    assert len({round(lr, 12) for lr in log["lr"][2]}) > 2  # adapters got different LRs from their base α


def test_qlora_on_a_4bit_base_saves_the_adapter(data_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    from peft import AutoPeftModelForCausalLM

    folder = _folder64(tmp_path)
    out = tmp_path / "qlora"
    assert main(["finetune", "--model", str(folder), "--data-dir", str(data_dir), "--steps", "2", "--qlora",
                 "--batch-size", "2", "--seq-len", "32", "--eval-every", "2", "--out", str(out)]) == 0
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["base_model_name_or_path"] == str(folder)
    model = AutoPeftModelForCausalLM.from_pretrained(out)
    ids = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_quantized_checkpoint_is_refused_for_training(tmp_path, data_dir, capsys):
    folder = _folder64(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["finetune", "--model", str(folder), "--data-dir", str(data_dir), "--out", str(tmp_path / "x")]) == 2
    assert "is a quantized checkpoint" in capsys.readouterr().err


def test_qlora_merge_saves_the_float_model_with_the_adapter_merged(data_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    from compress.model import is_quantized_folder

    folder = _folder64(tmp_path)
    out = tmp_path / "merged"
    assert main(["finetune", "--model", str(folder), "--data-dir", str(data_dir), "--steps", "2", "--qlora",
                 "--merge", "--lr", "1e-2", "--batch-size", "2", "--seq-len", "32", "--eval-every", "2",
                 "--out", str(out)]) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not is_quantized_folder(out)
    merged = AutoModelForCausalLM.from_pretrained(out)  # an ordinary float checkpoint: the next stage quantizes it
    original = AutoModelForCausalLM.from_pretrained(folder)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert merged.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    from safetensors.torch import load_file

    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    a, b = (next(v for k, v in adapter.items() if f"layers.0.mlp.up_proj.lora_{x}" in k) for x in "AB")
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    delta = merged.model.layers[0].mlp.up_proj.weight - original.model.layers[0].mlp.up_proj.weight
    # the float weights moved by exactly the adapter's update B·A·(alpha/r), not re-rounded to NF4
    assert delta.abs().max() > 0
    torch.testing.assert_close(delta, b @ a * (config["lora_alpha"] / config["r"]), atol=1e-6, rtol=1e-4)
    assert torch.equal(merged.model.norm.weight, original.model.norm.weight)
