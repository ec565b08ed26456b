"""`compress run`: score -> plan -> GPTQ -> one output folder.

The folder is an ordinary GPTQ checkpoint (config.json with quantization_config and `dynamic`,
safetensors, tokenizer) plus scores.json, plan.json, settings.json and stats.json, so a run can be read
and repeated (`--plan plan.json`). It is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from compress.errors import CompressError
from compress.plan import Plan
from compress.policies import budgeted_bits, check_widths, layerwise_bits, proxy_costs, random_order

# --scorer -> (scorer to run, column whose importance order ranks the layers)
ORDER_COLUMNS = {"lim": ("lim", "lim"), "bi": ("lim", "bi"), "angular": ("lim", "angular_1"), "zd": ("zd", "zd"),
                 "alpha": ("alpha", "alpha"), "sensitivity": ("sensitivity", "sensitivity"), "random": (None, None)}


@dataclass(frozen=True)
class RunConfig:
    bits: str = "mixed"  # "mixed", or one width for a uniform plan
    avg_bits: float = 3.25  # mixed: target average over decoder layers
    bit_choices: tuple[int, ...] = (4, 2)  # mixed: two widths -> LayerwiseQuant count rule; more -> knapsack
    scorer: str = "lim"  # the importance order; "random" is the baseline
    seed: int = 0
    calib: str = "wikitext2-valid"
    calib_samples: int = 64  # GPTQ calibration: 64 x 512 tokens, ~10 min for SmolLM2-135M on 2 CPU cores
    calib_seq_len: int = 512
    score_samples: int = 8  # scorers (and measured knapsack costs) see calib[:score_samples, :score_seq_len]
    score_seq_len: int = 256  # sensitivity costs (L + 1) forwards per width: kept short on purpose
    ppl_windows: int | None = 4  # WikiText-2 test windows of 2048 for perplexity before/after (None: all, 0: skip)
    group_size: int | None = None
    sym: bool = True
    desc_act: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "bit_choices", check_widths(self.bit_choices))
        if self.bits != "mixed":
            if not self.bits.isdigit():
                raise CompressError(f"--bits must be mixed or a width, got {self.bits!r}")
            check_widths([int(self.bits)])
        elif not min(self.bit_choices) <= self.avg_bits <= max(self.bit_choices):
            raise CompressError(f"--avg-bits {self.avg_bits} is outside the range of the choices "
                                f"{min(self.bit_choices)}..{max(self.bit_choices)}")
        if self.scorer not in ORDER_COLUMNS:
            raise CompressError(f"unknown --scorer {self.scorer!r}; valid: {', '.join(ORDER_COLUMNS)}")


def make_plan(n_layers: int, scores, config: RunConfig, params: list[int] | None = None,
              costs: list[dict[int, float]] | None = None) -> Plan:
    """Per-layer widths from the importance order of the chosen score column. With more than two widths the
    exact knapsack decides, on measured `costs` (per layer {bits: KL}) when given, else on rank proxies."""
    if config.bits != "mixed":
        return Plan.uniform(n_layers, int(config.bits), "uniform")
    column = ORDER_COLUMNS[config.scorer][1]
    order = random_order(n_layers, config.seed) if column is None else scores.importance_order(column)
    rank = {index: r for r, index in enumerate(order)}
    label = column or f"random(seed {config.seed})"
    if len(config.bit_choices) == 2:
        bits = layerwise_bits(order, config.avg_bits, config.bit_choices)
    else:
        if costs is not None:
            label = f"knapsack on measured KL, {label}"
        bits = budgeted_bits(costs or proxy_costs(order, config.bit_choices), params or [1] * n_layers,
                             config.avg_bits)
    return Plan.uniform(n_layers).with_bits(bits, [f"{label} rank {rank[i]}/{n_layers}" for i in range(n_layers)])


def run(model: str | None, out: Path, config: RunConfig = RunConfig(), data_dir=None, plan_file=None,
        progress: bool = True) -> dict:
    from compress.api import versions
    from compress.data import calibration_samples, calibration_texts, wikitext2_test_text
    from compress.data import data_dir as resolve_data_dir
    from compress.model import check_model_spec, decoder_layers, layer_params, load_model, resolve_model_path
    from compress.outputs import check_writable, staged_folder
    from compress.perplexity import perplexity
    from compress.quant.gptq import GPTQSettings, load_quantized, quantize_gptq, resolve_group_size
    from compress.scorers import score
    from compress.scorers.sensitivity import measured_costs

    out = Path(out)
    if out.exists():
        raise CompressError(f"{out} already exists: choose a new --out")
    check_writable(out)
    check_model_spec(model)
    root = resolve_data_dir(data_dir)
    measure = config.ppl_windows != 0  # perplexity before/after (0: skipped)
    texts = calibration_texts(config.calib, root)
    test_text = wikitext2_test_text(root) if measure else None
    if plan_file and not Path(plan_file).is_file():
        raise CompressError(f"plan file {plan_file} does not exist")
    given = Plan.from_json(Path(plan_file).read_text()) if plan_file else None

    fp_model, tokenizer = load_model(model)
    n_layers = len(decoder_layers(fp_model))
    if given is not None:
        given.check_layers(n_layers)
    calib = calibration_samples(tokenizer, texts, n_samples=config.calib_samples, seq_len=config.calib_seq_len,
                                seed=config.seed)
    scorer = ORDER_COLUMNS[config.scorer][0]
    settings = GPTQSettings(group_size=config.group_size, sym=config.sym, desc_act=config.desc_act)
    group_size = resolve_group_size(fp_model, settings)
    score_calib = calib[:config.score_samples, :config.score_seq_len]
    # sensitivity is measured at the plan's low width and the group size GPTQ will use
    options = {"sensitivity": {"bits": config.bit_choices[0], "group_size": group_size, "sym": config.sym}}
    scores = score(fp_model, [scorer], score_calib, {k: v for k, v in options.items() if k == scorer},
                   progress=progress) if scorer and given is None else None
    costs = None
    if given is None and config.bits == "mixed" and len(config.bit_choices) > 2 and scorer == "sensitivity":
        costs = measured_costs(fp_model, score_calib, config.bit_choices, group_size, config.sym,
                               known={config.bit_choices[0]: scores["sensitivity"]}, progress=progress)
    plan = given or make_plan(n_layers, scores, config, layer_params(fp_model), costs)
    test_ids = tokenizer(test_text, return_tensors="pt").input_ids[0] if measure else None
    before = perplexity(fp_model, test_ids, max_windows=config.ppl_windows, progress=progress) if measure else None
    del fp_model

    with staged_folder(out) as tmp:
        stats = quantize_gptq(resolve_model_path(model), plan, calib, tmp, settings)
        if measure:
            quantized, _ = load_quantized(tmp)
            after = perplexity(quantized, test_ids, max_windows=config.ppl_windows, progress=progress)
            stats.update(ppl_before=before.to_dict(), ppl_after=after.to_dict())
        if scores is not None:
            (tmp / "scores.json").write_text(scores.to_json())
        if costs is not None:
            (tmp / "costs.json").write_text(json.dumps([{str(b): c for b, c in row.items()} for row in costs]))
        (tmp / "plan.json").write_text(plan.to_json())
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
        (tmp / "settings.json").write_text(json.dumps(
            {"command": "run", "model": model or "SmolLM2-135M-Instruct (bundled default)", "config": asdict(config),
             "plan_file": plan_file, "gptq": asdict(settings), "versions": versions()}, indent=1))
    return {"plan": plan, "scores": scores, "stats": stats}
