"""What each fused unit costs at each option, measured on the model: the plumbing under the allocator.

1. `unit_hessians`: H_u = mean x xᵀ of each unit's input over calibration tokens (one forward, hooks).
2. `rounded_table`: every unit at every option through GPTQ's solver (compress.quant.gptq_solve), kept as
   float16 weights, so any allocation can be put into the model without quantizing again.
3. Costs per (unit, option), from the table:
   - "fisher": ½ Σ F ⊙ (W − Q)², F = mean squared gradient of the LM loss taken at a quantized operating
     point (the model with a uniform base option everywhere) — the second-order Taylor term (HAWQ, HIGGS);
   - "taylor": Σ |G ⊙ (W − Q)|, G = the mean gradient there — auto-round AutoScheme's delta loss
     (`auto_scheme/delta_loss.py`), here at one shared base point instead of one per candidate;
   - "output": tr((W − Q) H (W − Q)ᵀ), GPTQ's own objective, free once the table exists;
   - "kl": the measured KL of the unit alone at the option, everything else float (the old baseline).
4. `allocation_kl`: the true KL(float ‖ allocation) on calibration rows, the yardstick every cost model and
   search is judged by.
Shapes: calib (samples, seq_len) int64; weights (out, in); a unit's weight is its modules' rows stacked.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from compress.bits.options import unit_options
from compress.model.units import Unit
from compress.plan import Option
from compress.model import named_linears
from compress.quant.ggml import ggml_weights
from compress.quant.gptq import ROUNDINGS
from compress.quant.gptq_solve import gptq_weights, output_error
from compress.quant.opt_rtn import opt_rtn_weights

Allocation = Mapping[str, Option]  # unit key ("3.qkv") -> option


def round_unit(w: torch.Tensor, h: torch.Tensor, option: Option, rounding: str = "gptq",
               damp: float = 0.05) -> torch.Tensor:
    """A unit's stacked weight (out, in) rounded at `option` by `rounding`, dequantized float32: GPTQ's solver
    on H, or opt-RTN's scale search weighted by diag(H) (= auto-round's imatrix, mean x² per column). A gguf
    option is always rounded as llama.cpp's reference quantizer does (compress.quant.ggml), whatever `rounding`."""
    if option.fmt == "gguf":
        return ggml_weights(w, option)
    if rounding == "opt-rtn":
        if not option.sym:
            raise ValueError(f"opt-rtn rounds symmetric grids only, not {option.label}")
        return opt_rtn_weights(w, option.bits, option.group_size, torch.diagonal(h))
    if rounding != "gptq":
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return gptq_weights(w, h, option.bits, option.group_size, option.sym, damp)


def linear_modules(model) -> dict[str, torch.nn.Module]:
    """{full module name: Linear} of the decoder: build once, pass to unit_weight / set_unit_weight."""
    return {name: m for name, _, m in named_linears(model)}


def unit_weight(mods: Mapping[str, torch.nn.Module], unit: Unit) -> torch.Tensor:
    """A unit's modules' weights stacked (out, in), float32; mods from linear_modules."""
    return torch.cat([mods[n].weight.detach() for n in unit.modules]).float()


def set_unit_weight(mods: Mapping[str, torch.nn.Module], unit: Unit, weight: torch.Tensor) -> None:
    """Write a unit's stacked (out, in) weight back into its modules."""
    start = 0
    for name, (out, _) in zip(unit.modules, unit.shapes):
        mods[name].weight.data.copy_(weight[start:start + out])
        start += out


def unit_hessians(model, units: Sequence[Unit], calib: torch.Tensor, batch_size: int = 4,
                  progress: bool = True) -> dict[str, torch.Tensor]:
    """{unit key: mean x xᵀ (in, in) float32} over every calibration token, inputs of the float model."""
    mods = linear_modules(model)
    sums = {u.key: torch.zeros(u.in_features, u.in_features) for u in units}
    count = [0]

    def hook(key):
        def grab(_, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            sums[key].addmm_(x.t(), x)
        return grab

    handles = [mods[u.modules[0]].register_forward_pre_hook(hook(u.key)) for u in units]
    try:
        with torch.inference_mode():
            for batch in tqdm(calib.split(batch_size), desc="hessians", unit="batch", disable=not progress,
                              leave=False):
                model(input_ids=batch, use_cache=False)
                count[0] += batch.numel()
    finally:
        for h in handles:
            h.remove()
    return {k: v / count[0] for k, v in sums.items()}


def rounded_table(model, units: Sequence[Unit], hessians: Mapping[str, torch.Tensor], options: Sequence[Option],
                  damp: float = 0.05, progress: bool = True, rounding: str = "gptq"
                  ) -> dict[str, dict[Option, torch.Tensor]]:
    """{unit key: {option: rounded stacked weight, float16}} for every option the unit can take."""
    table: dict[str, dict[Option, torch.Tensor]] = {}
    work = [(u, o) for u in units for o in unit_options(u, options)]
    bar = tqdm(work, desc=f"{rounding} per unit x option", unit="solve", disable=not progress, leave=False)
    mods = linear_modules(model)
    weights = {u.key: unit_weight(mods, u) for u in units}
    for unit, option in bar:
        q = round_unit(weights[unit.key], hessians[unit.key], option, rounding, damp)
        table.setdefault(unit.key, {})[option] = q.half()
    return table


def rtn_table(model, units: Sequence[Unit], options: Sequence[Option]) -> dict[str, dict[Option, torch.Tensor]]:
    """Like rounded_table with round-to-nearest instead of GPTQ: seconds instead of minutes (the cheap
    variant of the costs)."""
    from compress.quant.rtn import fake_quantize

    table: dict[str, dict[Option, torch.Tensor]] = {}
    mods = linear_modules(model)
    for unit in units:
        w = unit_weight(mods, unit)
        for option in unit_options(unit, options):
            q = fake_quantize(w, option.bits, option.group_size or unit.in_features, option.sym)
            table.setdefault(unit.key, {})[option] = q.half()
    return table


@contextmanager
def allocation_applied(model, units: Sequence[Unit], table, allocation: Allocation):
    """The model with each unit's weight replaced by its table entry for `allocation` (units not in it stay
    float); restored on exit."""
    mods, saved = linear_modules(model), {}
    try:
        for unit in units:
            if unit.key in allocation:
                saved[unit.key] = unit_weight(mods, unit)
                set_unit_weight(mods, unit, table[unit.key][allocation[unit.key]].float())
        yield model
    finally:
        for unit in units:
            if unit.key in saved:
                set_unit_weight(mods, unit, saved[unit.key])


def log_probs(model, rows: torch.Tensor, batch_size: int = 4) -> list[torch.Tensor]:
    """Next-token log-probabilities per batch, float16 (batch, seq_len − 1, vocab): the KL reference."""
    out = []
    with torch.inference_mode():
        for batch in rows.split(batch_size):
            out.append(torch.log_softmax(model(input_ids=batch, use_cache=False).logits[:, :-1].float(), -1).half())
    return out


def kl_to(model, rows: torch.Tensor, reference: Sequence[torch.Tensor], batch_size: int = 4) -> float:
    """Mean per-token KL(reference ‖ model) in nats on `rows` (the rows `reference` was computed on)."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch, ref in zip(rows.split(batch_size), reference):
            logq = torch.log_softmax(model(input_ids=batch, use_cache=False).logits[:, :-1].float(), -1)
            ref = ref.float()
            total += float((ref.exp() * (ref - logq)).sum())
            count += ref.shape[0] * ref.shape[1]
    return total / count


def gradients(model, calib: torch.Tensor, units: Sequence[Unit], batch_size: int = 1,
              progress: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """({unit key: mean gradient}, {unit key: mean squared gradient}) of the next-token loss, stacked like the
    unit's weight, per batch of `batch_size` rows (squared per batch: the empirical Fisher's diagonal)."""
    mods = linear_modules(model)
    params = {n: mods[n].weight for u in units for n in u.modules}
    flags = {n: p.requires_grad for n, p in params.items()}
    g_sum = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    f_sum = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    batches = calib.split(batch_size)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    try:
        for batch in tqdm(batches, desc="gradients", unit="batch", disable=not progress, leave=False):
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            loss.backward()
            for n, p in params.items():
                g_sum[n] += p.grad
                f_sum[n] += p.grad.square()
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.requires_grad_(flags[n])
    stack = lambda sums, u: torch.cat([sums[n] for n in u.modules]) / len(batches)  # noqa: E731
    return {u.key: stack(g_sum, u) for u in units}, {u.key: stack(f_sum, u) for u in units}


def proxy_costs(model, units: Sequence[Unit], table, hessians, grad, fisher) -> dict[str, dict[str, dict]]:
    """{cost name: {unit key: {option: cost}}} for the model-free cost models: fisher, taylor, output."""
    costs: dict[str, dict[str, dict]] = {"fisher": {}, "taylor": {}, "output": {}}
    mods = linear_modules(model)
    for unit in units:
        w = unit_weight(mods, unit)
        for option, q in table[unit.key].items():
            d = w - q.float()
            costs["fisher"].setdefault(unit.key, {})[option] = 0.5 * float((fisher[unit.key] * d.square()).sum())
            costs["taylor"].setdefault(unit.key, {})[option] = float((grad[unit.key] * d).abs().sum())
            costs["output"].setdefault(unit.key, {})[option] = output_error(w, q, hessians[unit.key])
    return costs


def fisher_costs(model, units: Sequence[Unit], hessians, options: Sequence[Option], fisher, damp: float = 0.05,
                 progress: bool = True, rounding: str = "gptq") -> dict[str, dict[Option, float]]:
    """{unit key: {option: ½ Σ F ⊙ (W − Q)²}} with Q from `rounding`, each rounded weight dropped as soon
    as its cost is known: memory of one unit, not of the whole table (rounded_table keeps them all)."""
    costs: dict[str, dict[Option, float]] = {}
    mods = linear_modules(model)
    for unit in tqdm(units, desc=f"{rounding} per unit x option", unit="unit", disable=not progress, leave=False):
        w = unit_weight(mods, unit)
        for option in unit_options(unit, options):
            q = round_unit(w, hessians[unit.key], option, rounding, damp)
            costs.setdefault(unit.key, {})[option] = 0.5 * float((fisher[unit.key] * (w - q).square()).sum())
    return costs


def isolated_kl(model, units: Sequence[Unit], table, options: Sequence[Option], rows: torch.Tensor, reference,
                progress: bool = True) -> dict[str, dict[Option, float]]:
    """{unit key: {option: KL with only that unit rounded}} for the given options (the old, isolated cost)."""
    out: dict[str, dict[Option, float]] = {}
    work = [(u, o) for u in units for o in options if o in table[u.key]]
    for unit, option in tqdm(work, desc="isolated KL", unit="forward", disable=not progress, leave=False):
        with allocation_applied(model, [unit], table, {unit.key: option}):
            out.setdefault(unit.key, {})[option] = kl_to(model, rows, reference)
    return out
