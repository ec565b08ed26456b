"""Count the bad-input cases that meet the CLI contract (exit 2, one line "compress: error: ...", no traceback,
nothing at --out) for whatever `compress` is importable: run it from a checkout with PYTHONPATH=<checkout> to
measure an older commit with the same cases (tests/test_bad_inputs.py CASES plus the --out policy cases).

    COMPRESS_DATA_DIR=../shared/data python eval/bad_inputs.py --label after --out eval/results/bad_inputs.json
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
            ok, detail = check(full)
            clean = setup is not None or not out.exists()
            results.append({"case": case, "meets_contract": ok and clean, "detail": detail})
            print(f"{'ok  ' if ok and clean else 'FAIL'} {case}: {detail}", flush=True)
    record = {"label": args.label, "cases": len(results), "meet": sum(r["meets_contract"] for r in results),
              "results": results}
    path = Path(args.out)
    previous = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps([r for r in previous if r["label"] != args.label] + [record], indent=1) + "\n")
    print(f"{args.label}: {record['meet']} of {record['cases']} cases meet the contract")


if __name__ == "__main__":
    main()
