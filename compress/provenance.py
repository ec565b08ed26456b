"""What produced a result: versions of the software and the machine, recorded in every settings.json,
eval.json, bench.json and benchmark table. Cheap: no torch import of its own."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def versions() -> dict[str, str]:
    """Versions of what produced a result, for every settings.json and benchmark table."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "machine": f"{platform.machine()} {platform.system()}",
           "cpu": _cpu_name(), "cores": str(os.cpu_count())}
    for name in ("compress", "torch", "transformers", "gguf", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    torch = sys.modules.get("torch")  # the GPU only where torch is already in use: versions() stays cheap
    if torch is not None and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
