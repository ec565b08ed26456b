"""Count the bad-input cases that meet the CLI contract (exit 2, one line "compress: error: ...", no traceback,
nothing at --out) for whatever `compress` is importable: run it from a checkout with PYTHONPATH=<checkout> to
measure an older commit with the same cases (tests/test_bad_inputs.py CASES plus the --out policy cases).

    COMPRESS_DATA_DIR=../shared/data python eval/bad_inputs.py --label after --out eval/results/bad_inputs.json
    git worktree add /tmp/before b0eda7f && PYTHONPATH=/tmp/before COMPRESS_DATA_DIR=../shared/data \
        python eval/bad_inputs.py --label "before (b0eda7f)" --out eval/results/bad_inputs.json \
        --not-run preflight-run-ram,preflight-finetune-ram

Without a preflight the two --not-run cases try the allocation (the old checkout was OOM-killed when tried).
Writes the JSON and a .md table beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# --out policy cases: (id, argv, what to put at {out} first)
POLICY = [
    ("score-non-empty-out", ["score", "--model", "{root}/tiny", "--scorers", "zd", "--out", "{out}"], "keep.txt"),
    ("run-non-empty-out", ["run", "--model", "{root}/tiny", "--bits", "16", "--out", "{out}"], "keep.txt"),
    ("finetune-non-empty-out", ["finetune", "--model", "{root}/tiny", "--out", "{out}"], "keep.txt"),
    ("bench-existing-record", ["bench", "{root}/tiny", "--input-len", "8", "--output-len", "8", "--repeats", "1",
                               "--warmup", "0", "--batch-sizes", "1", "--out", "{out}"], "bench.json"),
    ("report-existing-record", ["report", "{root}/eval-shape", "--out", "{out}"], "report.md"),
    ("score-out-is-the-model", ["score", "--model", "{out}", "--scorers", "zd", "--out", "{out}", "--overwrite"],
     "model"),
]


def check(argv: list[str]) -> tuple[bool, str]:
    from compress.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # noqa: BLE001 - a traceback is a contract failure, counted
            return False, f"raised {type(e).__name__}: {str(e)[:150]}"
    lines = [line for line in err.getvalue().splitlines() if line.strip() and "preflight:" not in line]
    ok = code == 2 and len(lines) == 1 and lines[0].startswith("compress: error: ")
    return ok, f"exit {code}: " + " | ".join(lines)[-200:]


def main() -> None:
    import shutil

    from test_bad_inputs import CASES, build_bad_inputs

    parser = argparse.ArgumentParser()
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--not-run", default="", help="comma list of cases counted as failing without running "
                        "them (an old checkout without a preflight tries the allocation and is OOM-killed)")
    args = parser.parse_args()
    data = os.environ["COMPRESS_DATA_DIR"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = build_bad_inputs(Path(tmp) / "bad")
        for case, argv, _ in CASES + [(c, a, None) for c, a, _ in POLICY]:
            out = Path(tmp) / f"out-{case}"
            setup = next((s for c, _, s in POLICY if c == case), None)
            if setup == "model":
                shutil.copytree(root / "tiny", out)
            elif setup:
                out.mkdir()
                (out / setup).write_text(json.dumps({"tasks": {}, "settings": {}}))
            full = [a.format(root=root, out=out) for a in argv] + ["--data-dir", data] * (argv[0] != "report")
            if case in args.not_run.split(","):
                ok, detail = False, "not run: without a preflight it tries the allocation (OOM-killed when tried)"
            else:
                ok, detail = check(full)
            clean = setup is not None or not out.exists()
            results.append({"case": case, "meets_contract": ok and clean, "detail": detail})
            print(f"{'ok  ' if ok and clean else 'FAIL'} {case}: {detail}", flush=True)
    from compress.provenance import versions

    record = {"label": args.label, "cases": len(results), "meet": sum(r["meets_contract"] for r in results),
              "versions": versions(), "results": results}
    path = Path(args.out)
    previous = json.loads(path.read_text()) if path.is_file() else []
    records = sorted([r for r in previous if r["label"] != args.label] + [record],
                     key=lambda r: not r["label"].startswith("before"))
    path.write_text(json.dumps(records, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(records))
    print(f"{args.label}: {record['meet']} of {record['cases']} cases meet the contract")


def markdown(records: list[dict]) -> str:
    """The before/after table, one row per case (what the first checkout did, for the failures)."""
    labels = [r["label"] for r in records]
    by = {r["label"]: {x["case"]: x for x in r["results"]} for r in records}
    lines = ["# Bad-input contract, before and after issue 14", "",
             "A case meets the contract when the command exits 2 with exactly one line `compress: error: ...` on "
             "stderr (a run past its preflight may print that line first), no traceback, and nothing at --out. "
             "Same cases for every checkout: tests/test_bad_inputs.py CASES plus the --out policy cases here; "
             "tiny models built on the spot, the real data dir. Reproduce: see this script's docstring.", "",
             "| checkout | cases meeting the contract |", "|---|---|"]
    lines += [f"| {r['label']} | **{r['meet']} of {r['cases']}** |" for r in records]
    v = records[-1].get("versions", {})
    lines += ["", "Machine: " + ", ".join(f"{k} {v[k]}" for k in v) + "."]
    lines += ["", "| case | " + " | ".join(labels) + f" | {labels[0]}: what happened |",
              "|---|" + "---|" * (len(labels) + 1)]
    for case in by[labels[-1]]:
        cells = ["ok" if by[label].get(case, {}).get("meets_contract") else "**fail**" for label in labels]
        detail = by[labels[0]].get(case, {}).get("detail", "").replace("|", "/")[:120]
        lines.append(f"| {case} | " + " | ".join(cells) + f" | {detail} |")
    lines += ["", "score-out-is-the-model passes before only because --overwrite did not exist (argparse refused "
              "the flag); without it the old score wrote into any existing folder (score-non-empty-out)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
