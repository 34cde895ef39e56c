"""Shared fixtures.

Data. Tests that need the image sets find them through ``GILAB_DATA`` (the Makefile sets it when ``../shared/data``
exists). Without it they are skipped, except when ``CI`` is set: there a missing data set is a failure, so that a
green CI run means the data tests really ran. Tests that use ``data_root`` or ``kodak_image`` get the ``data``
marker automatically (``pytest -m "not data"`` leaves them out).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch


def _share_the_cores():
    """Under pytest-xdist, split the cores between the workers instead of letting every worker's torch and
    numba pools spin on all of them: oversubscribed OpenMP pools made small ops 30-50x slower here."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))  # read when numba is first imported


_share_the_cores()


def require_data(*parts: str) -> Path:
    """``$GILAB_DATA/<parts>``; skips the test when absent, or fails it when ``CI`` is set."""
    env = os.environ.get("GILAB_DATA", "").strip()
    path = Path(env, *parts).resolve() if env else None  # absolute: tests link to it from tmp folders
    if path is not None and path.exists():
        return path
    reason = (f"{path} does not exist" if path is not None else "GILAB_DATA is not set") + " (data tests need it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the data are missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data folder ($GILAB_DATA): ``kodak/``, ``train/bsds500/``. Skips (or fails under CI) without it."""
    return require_data()


@pytest.fixture(scope="session")
def kodak_image() -> torch.Tensor:
    """kodim01 (a red door and brick wall) as (3, 512, 768) float32 in [0, 1]. Clone it before changing it."""
    from gilab.io import load_image

    return load_image(require_data("kodak", "kodim01.png"))


@pytest.fixture
def tiny_image() -> torch.Tensor:
    """A deterministic synthetic image, (3, 24, 32) float32 in [0, 1]: smooth gradients, a disc and an edge.

    Small enough for dense rendering and gradient checks; it has flat areas, smooth ramps and sharp edges.
    """
    return synthetic_image(24, 32)


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package), for tests of their parts."""
    import importlib.util

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    if str(folder) not in sys.path:  # as when a script runs: its folder first, so benchmarks can share helpers
        sys.path.insert(0, str(folder))
    path = folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_image(height: int, width: int) -> torch.Tensor:
    """(3, height, width) float32 in [0, 1], the same for the same size on every machine."""
    y = torch.linspace(0, 1, height).view(-1, 1).expand(height, width)
    x = torch.linspace(0, 1, width).view(1, -1).expand(height, width)
    disc = (((x - 0.35) ** 2 + (y - 0.5) ** 2) < 0.06).float()
    edge = (x > 0.7).float()
    red = 0.2 + 0.6 * x * (1 - disc) + 0.9 * disc * 0.2
    green = 0.1 + 0.8 * y * (1 - edge) + 0.5 * edge
    blue = 0.5 + 0.4 * torch.sin(6.0 * x + 3.0 * y) * (1 - disc)
    return torch.stack([red, green, blue]).clamp(0, 1).contiguous()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if {"data_root", "kodak_image"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)
