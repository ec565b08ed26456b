"""Determinism of a recipe on the real model (issue 17, item 4): two runs of the same recipe, same seed, same
machine, compared file by file — every safetensors file must be byte-identical and every JSON number equal
except timings (keys holding "seconds").

    COMPRESS_DATA_DIR=../shared/data compress run pipelines/mixed.yaml --out runs/recipes/mixed
    COMPRESS_DATA_DIR=../shared/data compress run eval/recipe_determinism.yaml --out /tmp/again
    python eval/recipe_determinism.py runs/recipes/mixed /tmp/again --out eval/results/recipes

Only the stage folders both runs hold are compared (the second run may leave out eval and bench).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compress.provenance import versions  # noqa: E402

# wall time; and fingerprint.json's "finish" (the eval / bench fingerprints), held only by a run that has them
LEFT_OUT = ("seconds", "finish")


def untimed(value):
    """`value` (parsed JSON) without the keys that hold wall time or the finishing steps' records."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not any(t in k for t in LEFT_OUT)}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def compare_stage(a: Path, b: Path) -> dict:
    """{file: "identical" | "differs"} for the safetensors and the JSON files that both stage folders hold."""
    out = {}
    for path in sorted(a.rglob("*")):
        other = b / path.relative_to(a)
        if not other.is_file() or path.suffix not in (".safetensors", ".json"):
            continue
        if path.suffix == ".safetensors":
            same = hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(other.read_bytes()).digest()
        else:
            same = untimed(json.loads(path.read_text())) == untimed(json.loads(other.read_text()))
        out[str(path.relative_to(a))] = "identical" if same else "differs"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--out", type=Path, default=Path("eval/results/recipes"))
    args = parser.parse_args()
    stages = sorted(p.name for p in args.first.iterdir() if p.is_dir() and (args.second / p.name).is_dir())
    files = {stage: compare_stage(args.first / stage, args.second / stage) for stage in stages}
    differs = [f"{s}/{f}" for s, fs in files.items() for f, v in fs.items() if v != "identical"]
    result = {"first": str(args.first), "second": str(args.second), "files": files, "differs": differs,
              "versions": versions()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "determinism.json").write_text(json.dumps(result, indent=1) + "\n")
    count = sum(len(fs) for fs in files.values())
    print(f"{count - len(differs)} of {count} files identical" + (f"; differ: {', '.join(differs)}" if differs else ""))
    sys.exit(1 if differs else 0)


if __name__ == "__main__":
    main()
