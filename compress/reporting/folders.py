"""`compress report RUN_DIR [RUN_DIR ...]`: one report.md for output folders of compress.

Per folder: what it is (settings.json), the per-layer picture (plan.json rows with the scores that chose them:
skip_scores.json for removals, scores.json for bits; layers.png), perplexity before/after (stats.json), the
eval table with recovery (eval.json, `compress eval`) and the bench table (bench.json, `compress bench`).
Across folders: one row each of quality, size and speed, and tradeoff.png (quality vs bits per weight, marker
area = output tokens/s). Whatever a folder lacks is said, not guessed.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.errors import CompressError


# Keys (and their JSON types) a record must hold for the report to read it.
_RECORD_KEYS = {"eval.json": {"tasks": dict}, "bench.json": {"models": list}}


def _read(folder: Path, name: str):
    """A record of the folder (JSON object), None when absent; a damaged one is refused by name."""
    from compress.files import read_record

    path = folder / name
    return read_record(path, name, _RECORD_KEYS.get(name, {})) if path.is_file() else None


def layer_rows(folder: Path) -> tuple[list[dict], dict[str, list]]:
    """(plan rows of the original layers, {score column: values by original layer index}) of a run folder."""
    from compress.plan import Plan
    from compress.scores import LayerScores

    from compress.files import read_text

    plan = Plan.from_json(read_text(folder / "plan.json", "plan"), source=str(folder / "plan.json"))
    rows = [{"layer": d.index, "bits": d.bits, "skip": d.skip, "reason": d.reason} for d in plan.layers]
    columns: dict[str, list] = {}
    skip_scores = _read(folder, "skip_scores.json")
    if skip_scores is not None:  # original indices
        scores = LayerScores.from_dict(skip_scores)
        columns.update({f"{name} (removal)": list(scores[name]) for name in scores.names})
    bit_scores = _read(folder, "scores.json")
    if bit_scores is not None:  # indices of the saved model = the kept layers in order
        scores = LayerScores.from_dict(bit_scores)
        kept = plan.kept
        for name in scores.names:
            values = [None] * plan.n_layers
            for position, layer in enumerate(kept):
                values[layer] = scores[name][position]
            columns[f"{name} (bits)"] = values
    return rows, columns


def plot_layers(rows: list[dict], columns: dict[str, list], path: Path, title: str) -> None:
    """Top: the score columns by original layer; bottom: bits per layer, removed layers marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if columns else 1
    fig, axes = plt.subplots(panels, 1, figsize=(9, 2.6 * panels + 0.6), sharex=True, squeeze=False)
    x = [r["layer"] for r in rows]
    if columns:
        for name, values in columns.items():
            points = [(i, v) for i, v in zip(x, values) if v is not None]
            axes[0, 0].plot(*zip(*points), marker="o", markersize=3, label=name)
        axes[0, 0].legend(fontsize=7)
        axes[0, 0].set_title("scores that made the plan", fontsize=9)
        axes[0, 0].grid(alpha=0.3)
    ax = axes[-1, 0]
    kept = [r for r in rows if not r["skip"]]
    ax.bar([r["layer"] for r in kept], [r["bits"] for r in kept], color="tab:blue", label="bits (kept layer)")
    removed = [r["layer"] for r in rows if r["skip"]]
    if removed:
        ax.scatter(removed, [0.5] * len(removed), marker="x", color="tab:red", s=40, label="removed", zorder=3)
    ax.set_xlabel("decoder layer (original index)")
    ax.set_ylabel("bits")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_row(folder: Path) -> dict:
    """Quality, size and speed of one folder, from its eval.json / bench.json (None where missing)."""
    from compress.evaluation.lmeval import mean_recovery

    evaluation, bench = _read(folder, "eval.json"), _read(folder, "bench.json")
    row = {"run": folder.name, "mean_recovery": None, "bits_per_weight": None, "weight_mib": None,
           "tokens_per_s": None}
    if evaluation:
        row["mean_recovery"] = mean_recovery(evaluation)[0]
    if bench:
        first = bench["models"][0]
        row["bits_per_weight"] = first["size"]["bits_per_weight"]
        row["weight_mib"] = first["size"]["weight_bytes"] / 2**20
        batch_1 = first["results"].get("batch_1") or next(iter(first["results"].values()))
        row["tokens_per_s"] = batch_1["median_output_throughput"]
    return row


def plot_tradeoff(rows: list[dict], path: Path) -> bool:
    """Mean recovery vs bits per weight, marker area ∝ output tokens/s; False if no row has all three."""
    points = [r for r in rows if None not in (r["mean_recovery"], r["bits_per_weight"], r["tokens_per_s"])]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    top = max(r["tokens_per_s"] for r in points)
    for r in points:
        ax.scatter(r["bits_per_weight"], r["mean_recovery"], s=40 + 400 * r["tokens_per_s"] / top, alpha=0.6)
        ax.annotate(f"{r['run']}\n{r['tokens_per_s']:.1f} tok/s", (r["bits_per_weight"], r["mean_recovery"]),
                    fontsize=7, textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("checkpoint bits per weight")
    ax.set_ylabel("mean lm-eval recovery vs baseline, %")
    ax.set_title("quality vs size (marker area: output tokens/s, batch 1)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def folder_section(folder: Path, out: Path) -> tuple[str, dict[str, object]]:
    """(Markdown of one folder, {file name: content} of its figures to write into `out`)."""
    from compress.benchmark.command import markdown as bench_markdown
    from compress.evaluation.lmeval import markdown as eval_markdown

    settings, stats = _read(folder, "settings.json"), _read(folder, "stats.json")
    lines = [f"## {folder.name}", "", f"Folder: `{folder}`"]
    if settings:
        lines.append(f"Made by `compress {settings.get('command', '?')}` from {settings.get('model', '?')}.")
    files: dict[str, object] = {}
    if (folder / "plan.json").is_file():
        rows, columns = layer_rows(folder)
        png = f"layers-{folder.name}.png"
        files[png] = lambda path, rows=rows, columns=columns: plot_layers(rows, columns, path, folder.name)
        removed = [r["layer"] for r in rows if r["skip"]]
        kept_bits = [r["bits"] for r in rows if not r["skip"]]
        head = ["layer", *columns, "bits", "removed", "reason"]
        lines += ["", "### Layers", "",
                  f"{len(rows)} layers, {len(removed)} removed{f' {removed}' if removed else ''}; bits of kept "
                  f"layers: mean {sum(kept_bits) / max(1, len(kept_bits)):.2f}.", "", f"![layers]({png})", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = ["–" if c[r["layer"]] is None else f"{c[r['layer']]:.4g}" for c in columns.values()]
            cells = [str(r["layer"]), *cells, "–" if r["skip"] else str(r["bits"]), "yes" if r["skip"] else "",
                     r["reason"]]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines += ["", "No plan.json: not a `compress run` folder, so no per-layer picture."]
    if stats and "ppl_after" in stats:
        lines += ["", f"WikiText-2 perplexity: {stats['ppl_before']['ppl']:.3f} before, "
                      f"{stats['ppl_after']['ppl']:.3f} after ({stats['ppl_after'].get('windows', '?')} windows)."]
    for name, render, command in (("eval.json", eval_markdown, "compress eval"),
                                  ("bench.json", bench_markdown, "compress bench")):
        data = _read(folder, name)
        body = render(data).split("\n", 1)[1].strip() if data else f"No {name}: run `{command} {folder}`."
        lines += ["", f"### {'Evaluation' if name == 'eval.json' else 'Benchmark'}", "", body]
    return "\n".join(lines) + "\n", files


def write_report(folders: list[Path], out: Path | None = None, overwrite: bool = False) -> Path:
    """report.md (+ layer and trade-off figures) for `folders`, into `out` (default: the first folder); an
    earlier report.md there is replaced only with `overwrite`."""
    from compress.outputs import claim_output, write_folder

    for folder in folders:
        if not folder.is_dir():
            raise CompressError(f"{folder} is not a folder")
    out = claim_output(Path(out) if out else folders[0], overwrite=overwrite, records=("report.md",))
    files: dict[str, object] = {}
    sections = []
    rows = []
    for folder in folders:
        try:  # a record that parses but is not in the shape compress writes: one line naming the folder
            text, figures = folder_section(folder, out)
            rows.append(summary_row(folder))
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
            raise CompressError(f"{folder}: a record there is not in the shape compress writes "
                                f"({type(e).__name__}: {e}); write it again with the command that made it") from e
        sections.append(text)
        files.update(figures)
    table = ["| run | mean recovery % | bits / weight | weight files MiB | output tok/s (batch 1) |",
             "|---|---|---|---|---|"]
    for r in rows:
        table.append("| " + " | ".join([r["run"]] + ["–" if r[k] is None else f"{r[k]:.{d}f}" for k, d in
                     (("mean_recovery", 1), ("bits_per_weight", 2), ("weight_mib", 1), ("tokens_per_s", 1))]) + " |")
    head = ["# compress report", "", "## Quality, size and speed", "", *table, ""]
    if any(None not in (r["mean_recovery"], r["bits_per_weight"], r["tokens_per_s"]) for r in rows):
        files["tradeoff.png"] = lambda path: plot_tradeoff(rows, path)
        head += ["![quality vs size vs speed](tradeoff.png)", ""]
    files["report.md"] = "\n".join(head) + "\n" + "\n".join(sections)
    write_folder(out, files)
    return out / "report.md"
