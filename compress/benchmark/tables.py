"""bench.md and bench.png of `compress bench`: one row per model and batch size, speed-ups against the
baseline; latency and throughput bars."""

from __future__ import annotations

from pathlib import Path

# (key in a batch record, column title, digits) of the Markdown table.
COLUMNS = (("prefill_ms", "prefill ms", 1), ("median_ttft_ms", "TTFT p50 ms", 1), ("median_tpot_ms", "TPOT p50 ms", 2),
           ("median_e2el_ms", "e2e p50 ms", 0), ("p90_e2el_ms", "p90", 0), ("p99_e2el_ms", "p99", 0),
           ("median_output_throughput", "output tok/s", 1), ("median_decode_throughput", "decode tok/s", 1))


def markdown(result: dict) -> str:
    """One row per (model, batch size); speed-up = baseline e2e p50 / model e2e p50 at the same batch."""
    settings = result["settings"]
    models = result["models"]
    base = models[1] if len(models) > 1 else None
    device = models[0]["device"]
    lines = [f"# compress bench ({result['backend']} backend, {device})", "",
             f"Prompt {settings['input_len']} tokens ({result['data']}), {settings['output_len']} new tokens forced, "
             f"greedy; {settings['repeats']} timed runs after {settings['warmup']} warm-up per batch size. "
             f"TPOT excludes the first token" + (
                 "; vLLM times each batched call whole, so TTFT is the call with one new token and "
                 "TPOT = (e2e - TTFT) / (output - 1)." if result["backend"] == "vllm" else "."), "",
             "| model | batch | " + " | ".join(title for _, title, _ in COLUMNS) + (" | speed-up |" if base else " |"),
             "|" + "---|" * (len(COLUMNS) + 2 + (1 if base else 0))]
    for record in models:
        for key, row in record["results"].items():
            cells = [f"{row[k]:.{d}f}" for k, _, d in COLUMNS]
            speed = ""
            if base:
                speed = f" {base['results'][key]['median_e2el_ms'] / row['median_e2el_ms']:.2f}× |"
            lines.append(f"| {record['label']} | {row['batch']} | " + " | ".join(cells) + " |" + speed)
    lines += ["", "| model | weight files MiB | bits / weight | parameters | peak RAM MiB | load s |"
              + (" peak VRAM MiB |" if "peak_vram_mib" in models[0] else ""),
              "|---|---|---|---|---|---|" + ("---|" if "peak_vram_mib" in models[0] else "")]
    for record in models:
        size = record["size"]
        vram = f" {record['peak_vram_mib']:.0f} |" if "peak_vram_mib" in record else ""
        lines.append(f"| {record['label']} | {size['weight_bytes'] / 2**20:.1f} | {size['bits_per_weight']:.2f} | "
                     f"{size['parameters'] / 1e6:.1f} M | {record['peak_ram_mib']:.0f} | {record['load_s']:.1f} |{vram}")
    versions = result["versions"]
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; torch threads "
              f"{models[0]['threads']}."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Two panels: e2e latency p50 (bars, p90/p99 whiskers) and output tokens/s, per model and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    batches = list(models[0]["results"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(models)
    for m, record in enumerate(models):
        xs = [b + (m - (len(models) - 1) / 2) * width for b in range(len(batches))]
        rows = [record["results"][key] for key in batches]
        p50 = [r["median_e2el_ms"] / 1000 for r in rows]
        err = [[0] * len(rows), [(r["p99_e2el_ms"] - r["median_e2el_ms"]) / 1000 for r in rows]]
        axes[0].bar(xs, p50, width, yerr=err, capsize=3, label=record["label"])
        axes[1].bar(xs, [r["median_output_throughput"] for r in rows], width, label=record["label"])
    for ax, title in zip(axes, ("end-to-end latency, s (p50, whisker to p99)", "output tokens/s (p50)")):
        ax.set_xticks(range(len(batches)), [key.replace("_", " ") for key in batches])
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    settings = result["settings"]
    fig.suptitle(f"{settings['input_len']} in / {settings['output_len']} out, {models[0]['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
