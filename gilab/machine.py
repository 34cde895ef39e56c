"""Which machine a measurement ran on, in the words every benchmark and study records.

Timings here differ by 2-3x between the kinds of 2-core machine this project runs on (an Intel Xeon with
AVX-512 and an AMD EPYC with AVX2, `figures/README.md`), so each JSON names the CPU model, not just the
architecture (``platform.machine()`` says "x86_64" for both, ``platform.processor()`` often nothing).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. "AMD EPYC"), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """One line: CPU model, core count, GPU if any, torch version and its thread count."""
    import torch

    device = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu_name()}, {os.cpu_count()} cores{device}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
