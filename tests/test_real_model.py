"""Integration tests on the real default model (SmolLM2-135M-Instruct, bundled GGUF) and real WikiText-2."""

import sys
from pathlib import Path

import pytest

from compress.cli import main
from compress.model import decoder_layers, load_model, resolve_model_path
from compress.scorers.outliers import outlier_scores
from compress.scorers.spectral import matrix_table

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smollm2():
    return load_model(None)


def test_default_model_loads_from_the_bundled_gguf_and_is_cached(smollm2):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert len(decoder_layers(model)) == 30
    cached = resolve_model_path(None)  # already converted: a plain safetensors folder in the user cache
    assert (Path(cached) / "model.safetensors").is_file()
    assert tokenizer.decode(tokenizer("The capital of France").input_ids) == "The capital of France"


def test_score_command_prints_a_30_layer_table(tmp_path, data_dir, capsys):
    out = tmp_path / "scores"
    assert main(["score", "--data-dir", str(data_dir), "--out", str(out), "--calib-samples", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "layer"
    assert [line.split()[0] for line in lines[1:31]] == [str(i) for i in range(30)]
    assert (out / "scores.png").stat().st_size > 10_000


def test_layer_11_down_proj_has_a_weight_30_std_out(smollm2):
    rows = outlier_scores(smollm2[0], progress=False).matrices
    row = next(r for r in rows if r["name"] == "model.layers.11.mlp.down_proj")
    assert row["max_abs_over_std"] == pytest.approx(30, abs=2)
    ranked = sorted(rows, key=lambda r: -r["max_abs_over_std"])
    assert row in ranked[:5]  # among the 5 most extreme of 210 matrices (layer 27 gate_proj is the largest)


def test_alpha_matches_weightwatcher(smollm2):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))  # eval/parity.py: a dev helper
    from parity import alpha_parity, weightwatcher_alphas

    ours = {r["name"]: r["alpha"] for r in matrix_table(smollm2[0], progress=False)}
    parity = alpha_parity(ours, weightwatcher_alphas(smollm2[0]))
    assert parity["matrices"] == 211  # 30 x 7 decoder Linears + lm_head
    assert parity["median_abs_diff"] <= 0.02


def test_wikitext2_perplexity_prefix(smollm2, data_dir):
    from compress import PplConfig, ppl

    model, tokenizer = smollm2
    result = ppl(model, PplConfig(seq_len=512, max_windows=2), tokenizer=tokenizer, data_dir=data_dir, progress=False)
    assert (result.seq_len, result.windows, result.tokens_scored) == (512, 2, 1022)
    assert result.windows_total > 500
    assert 5 < result.ppl < 60


def test_gptq_at_every_width_reloads_to_what_its_safetensors_say(smollm2, data_dir, tmp_path):
    """SmolLM2 with a quarter of its layers at each of 8/4/3/2 bits: the reloaded checkpoint (GPTQModel's
    CPU kernels) computes what the packed codes say (weights unpacked in plain torch), and stays usable."""
    pytest.importorskip("gptqmodel")
    import torch

    from compress.data import calibration_samples, calibration_texts, wikitext2_test_text
    from compress.plan import Plan
    from compress.model import load_gptq
    from compress.quant.gptq import quantize_gptq
    from compress.quant.unpack import load_dequantized

    model, tokenizer = smollm2
    bits = [(8, 4, 3, 2)[i % 4] for i in range(30)]
    calib = calibration_samples(tokenizer, calibration_texts("wikitext2-valid", data_dir), n_samples=2, seq_len=512)
    stats = quantize_gptq(resolve_model_path(None), Plan.uniform(30).with_bits(bits), calib, tmp_path / "q")
    assert stats["group_size"] == 64 and len(stats["layer_loss"]) == 30
    quantized, _ = load_gptq(tmp_path / "q")
    assert [decoder_layers(quantized)[i].mlp.down_proj.bits for i in range(4)] == [8, 4, 3, 2]
    reference = load_dequantized(load_model(None)[0], tmp_path / "q").to(quantized.dtype)
    ids = tokenizer(wikitext2_test_text(data_dir), return_tensors="pt").input_ids[0][:256]
    with torch.inference_mode():
        nll = [torch.nn.functional.cross_entropy(m(input_ids=ids[None]).logits[0, :-1].float(), ids[1:]).item()
               for m in (quantized, reference, model)]
    # bfloat16 rounding only: eval/results/mixed_bits measured |Δnll| <= 0.07 on 24 checkpoints (growing with
    # how far the model is from the original), where a wrong code, zero point or kernel moves it by nats
    assert abs(nll[0] - nll[1]) < 0.1
    assert nll[2] < nll[0] < 8  # 2-bit layers cost (ppl ~20 -> ~100s), but the model still predicts text


def test_skip_run_saves_a_smaller_smollm2_that_reloads(tmp_path, data_dir, capsys):
    """`compress run --skip 0.25 --skip-policy bi --bits 16` on the real model: 8 of 30 layers removed,
    an ordinary checkpoint that AutoModelForCausalLM reloads and decodes with its KV cache."""
    import json

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "skip"
    assert main(["run", "--data-dir", str(data_dir), "--skip", "0.25", "--skip-policy", "bi", "--bits", "16",
                 "--calib-samples", "8", "--max-windows", "1", "--out", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["layers"]["after"] == 22 and len(stats["layers"]["removed"]) == 8
    bi = json.loads((out / "skip_scores.json").read_text())["columns"]["bi"]
    assert max(bi[i] for i in stats["layers"]["removed"]) <= min(
        bi[i] for i in range(30) if i not in stats["layers"]["removed"])
    # removing a quarter of the layers by BI costs quality (8 windows: 19.1 -> 88.5, eval/bench_skip.py),
    # but the model still models text: far from random removal (29,904)
    assert stats["ppl_before"]["ppl"] < stats["ppl_after"]["ppl"] < 10 * stats["ppl_before"]["ppl"]
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert len(decoder_layers(model)) == model.config.num_hidden_layers == 22
    ids = torch.tensor([[1, 504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=2)
        plain = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=2)
    assert torch.equal(cached, plain)


def test_llr_groups_and_lrs_on_smollm2(smollm2):
    """LLR on the real model: 210 decoder matrices each with its own LR in [η, 5η] by its α, the tied
    embedding/head as one group at 5η, norms at η without weight decay."""
    import copy

    import pytest

    from compress.training.schedule import LayerwiseLR, group_alphas, param_groups
    from compress.training.lr_map import lr_policy
    from compress.training.optim import build_optimizer

    model = copy.deepcopy(smollm2[0])
    groups = param_groups(model)
    kinds = [g["kind"] for g in groups]
    assert kinds.count("tuned") == 30 * 7 and kinds.count("max") == 1
    assert groups[0]["name"] == "model.embed_tokens (tied to the LM head)"
    optimizer = build_optimizer("adamw", groups, 1e-4)
    scheduler = LayerwiseLR(optimizer, lr_policy("llr"), total_steps=100, warmup_steps=0)
    lrs = scheduler.history[0]
    alphas = group_alphas(optimizer.param_groups)
    low, high = min(alphas, key=alphas.get), max(alphas, key=alphas.get)
    assert lrs[low] == pytest.approx(1e-4) and lrs[high] == pytest.approx(5e-4) and lrs[0] == pytest.approx(5e-4)
    assert all(1e-4 - 1e-12 <= lr <= 5e-4 + 1e-12 for lr in lrs)
    norms = next(p for p, g in enumerate(optimizer.param_groups) if g["name"].startswith("untuned (norms"))
    assert lrs[norms] == pytest.approx(1e-4) and optimizer.param_groups[norms]["weight_decay"] == 0


# The split each standard task evaluates on (lm-eval 0.4.13 configs).
EVAL_SPLITS = {"wikitext": "test", "arc_easy": "test", "arc_challenge": "test", "piqa": "validation",
               "winogrande": "validation", "boolq": "validation", "lambada_openai": "test"}


def _standard_task_on_file(manager, name: str, file: Path):
    """lm-eval's own config of `name` with only its data source swapped for the local file (its prompts,
    targets, choices, metrics and processing untouched). Builds through the factory the TaskManager uses."""
    split = EVAL_SPLITS[name]
    overrides = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {split: str(file)}},
                 "training_split": None, "validation_split": split if split == "validation" else None,
                 "test_split": split if split == "test" else None}
    return manager._factory._build_task(manager.task_index[name], overrides)


def test_local_tasks_reproduce_lm_evals_own_configs_on_the_same_files(smollm2, data_dir, tmp_path):
    """The issue's check: same documents, same prompts, same accuracy as lm-eval's task applied to the file."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from compress.evaluation.local_tasks import LOCAL_TASKS, local_task_manager

    names = list(EVAL_SPLITS)
    standard = TaskManager()
    local = local_task_manager(names, data_dir, tmp_path / "tasks").load(names)["tasks"]
    references = {}
    for name in names:
        reference = _standard_task_on_file(standard, name, data_dir.resolve() / LOCAL_TASKS[name][0])
        mine = local[name]
        docs = list(mine.eval_docs)
        assert docs == list(reference.eval_docs) and len(docs) > 50, name
        for doc in docs:
            assert mine.doc_to_text(doc) == reference.doc_to_text(doc), name
            assert mine.doc_to_target(doc) == reference.doc_to_target(doc), name
            if mine.OUTPUT_TYPE == "multiple_choice":
                assert mine.doc_to_choice(doc) == reference.doc_to_choice(doc), name
        references[name] = reference
    model, tokenizer = smollm2
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16, device="cpu")
    for name in ("arc_easy", "boolq"):
        scores = [lm_eval.simple_evaluate(model=lm, tasks=[task], limit=40, num_fewshot=0, bootstrap_iters=0,
                                          log_samples=False)["results"][name]["acc,none"]
                  for task in (local[name], references[name])]
        assert scores[0] == scores[1] and 0.25 < scores[0] < 0.9, (name, scores)


def test_opt_rtn_checkpoint_holds_the_weights_the_allocator_costed(smollm2, data_dir, tmp_path):
    """`--rounding opt-rtn`: auto-round writes the GPTQ folder; its stored weights are the ones
    compress.quant.opt_rtn computes from the same calibration rows (so the allocator's Fisher costs price the
    real checkpoint), per-unit options included, and GPTQModel.load computes what they say."""
    pytest.importorskip("auto_round")
    pytest.importorskip("gptqmodel")
    import torch

    from compress.bits.unit_costs import linear_modules, unit_hessians, unit_weight
    from compress.bits.unit_plan import to_plan
    from compress.data import calibration_samples, calibration_texts, wikitext2_test_text
    from compress.model import load_gptq
    from compress.model.units import model_units
    from compress.plan import Option
    from compress.quant.autoround import quantize_autoround
    from compress.quant.gptq import GPTQConfig
    from compress.quant.opt_rtn import opt_rtn_weights
    from compress.quant.unpack import load_dequantized

    model, tokenizer = smollm2
    units = model_units(model)
    choice = {"qkv": Option(3, 64), "o": Option(4, 32), "gate_up": Option(3, None), "down": Option(8, 128)}
    allocation = {u.key: choice[u.name] if u.layer < 2 else Option(4, 64) for u in units}
    calib = calibration_samples(tokenizer, calibration_texts("wikitext2-valid", data_dir), n_samples=4, seq_len=256)
    stats = quantize_autoround(resolve_model_path(None), to_plan(units, allocation), calib, tmp_path / "q",
                               GPTQConfig(rounding="opt-rtn"))
    assert stats["base_bits"] == 4 and stats["size_bytes"] > 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "q" / "model.safetensors"), "pt") as f:  # compact_export: as GPTQModel stores
        assert "lm_head.weight" not in f.keys()  # SmolLM2 ties it to the embedding
        assert {f.get_slice(k).get_dtype() for k in f.keys()} <= {"F16", "I32"}  # no float32 embedding
    assert stats["size_bytes"] < 120e6  # 228 MB before compact_export
    stored = load_dequantized(load_model(None)[0], tmp_path / "q")
    mods, stored_mods = linear_modules(model), linear_modules(stored)
    hessians = unit_hessians(model, units[:8], calib, progress=False)
    for unit in units[:8]:  # layers 0-1: one unit at each of the four options
        option = allocation[unit.key]
        mirror = opt_rtn_weights(unit_weight(mods, unit), option.bits, option.group_size,
                                 torch.diagonal(hessians[unit.key]))
        step = (mirror - unit_weight(mods, unit)).abs().max()  # at most half a grid step, per unit
        agree = ((unit_weight(stored_mods, unit) - mirror).abs() <= 0.01 * step).float().mean()
        assert agree > 0.99, (unit.key, option.label, float(agree))  # fp16 scales and near-ties aside
    quantized, _ = load_gptq(tmp_path / "q")
    ids = tokenizer(wikitext2_test_text(data_dir), return_tensors="pt").input_ids[0][:256]
    with torch.inference_mode():
        nll = [torch.nn.functional.cross_entropy(m(input_ids=ids[None]).logits[0, :-1].float(), ids[1:]).item()
               for m in (quantized, stored.to(quantized.dtype))]
    assert abs(nll[0] - nll[1]) < 0.1  # GPTQModel's kernels compute the stored weights (bf16 aside)


def test_llama_cpp_target_writes_a_gguf_whose_types_follow_the_plan(tmp_path, data_dir, capsys):
    """`compress run --target llama.cpp` with a plan that removes a layer and mixes types: model.gguf holds the
    kept blocks renumbered, each Linear at its unit's type (q5_0/q8_0 chosen per unit), the rest F16/F32, and
    the weights it stores are the ones apply_ggml rounds to in torch (the perplexity after is measured on them)."""
    import json

    from gguf import GGUFReader

    from compress.model import layer_count

    rows = [{"index": i, "bits": 8, "units": {"qkv": "q8_0" if i == 0 else "q5_0",
             "o": "q4_0", "gate_up": "q4_1", "down": "q8_0"}} for i in range(30)]
    rows[29] = {"index": 29, "skip": True}
    (tmp_path / "plan.json").write_text(json.dumps({"format": 1, "layers": rows}))
    out = tmp_path / "gguf"
    assert main(["run", "--target", "llama.cpp", "--plan", str(tmp_path / "plan.json"), "--max-windows", "1",
                 "--calib-samples", "2", "--calib-seq-len", "32", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    assert "model.gguf: stored bits per decoder weight" in capsys.readouterr().out
    reader = GGUFReader(out / "model.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.1.attn_k.weight"] == "Q5_0"
    assert types["blk.3.attn_output.weight"] == "Q4_0" and types["blk.3.ffn_up.weight"] == "Q4_1"
    assert types["blk.28.ffn_down.weight"] == "Q8_0" and "blk.29.attn_q.weight" not in types
    assert types["token_embd.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    assert int(reader.get_field("llama.block_count").parts[-1][0]) == 29
    stats = json.loads((out / "stats.json").read_text())
    assert stats["layers"]["removed"] == [29] and stats["ppl_after"]["ppl"] > stats["ppl_before"]["ppl"]
    assert layer_count(str(out / "model.gguf")) == 29  # transformers reads it back
