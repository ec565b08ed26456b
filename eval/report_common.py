"""The shared tail of the report_*.py scripts: results.json in, results.md and one PNG out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable


def write_report(description: str, default_out: str, markdown: Callable[[dict], str],
                 plot: Callable[[dict, Path], None], png: str) -> None:
    """Parse --out (default `default_out`), read OUT/results.json, write OUT/results.md and OUT/<png>, print the
    Markdown."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default_out)
    out = Path(parser.parse_args().out)
    results = json.loads((out / "results.json").read_text())
    text = markdown(results)
    (out / "results.md").write_text(text)
    plot(results, out / png)
    print(text)
