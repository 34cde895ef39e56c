"""The notebooks run top to bottom in fast mode (``GILAB_FAST=1``: small images, few steps) and say what they should.

How outputs are checked (nbval's "lax" rule, done here with nbclient so that each notebook is one test that
pytest-xdist can spread): a fresh run must raise nothing and write nothing to stderr; the cells marked
``# NBVAL_CHECK_OUTPUT`` must print exactly what the committed notebook shows (their output does not depend
on the machine or on fast mode); every other output (timings, PSNRs, pictures) is free to vary, and instead a
check cell appended to the run asserts on the notebook's variables (``CHECKS`` below). The committed
notebooks keep the outputs of one run in normal mode, for readers on GitHub; the static tests check that they
do, and that they stay small. (``pytest --nbval-lax notebooks/`` with ``GILAB_FAST=1`` applies the same output rule.)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ["00_quickstart", "01_rasterizer", "02_gaussianimage_fitting"]
MAX_BYTES = 1_000_000

# Run after the notebook, in its kernel: what each notebook must have achieved even in fast mode.
CHECKS = {
    "00_quickstart": """
assert result.iterations == 100 and len(result.gaussians) == 600
assert result.psnr > result.history.psnr[0] + 8, result.summary()
assert torch.equal(g.means, result.gaussians.means) and zoomed.shape == pixels.shape
""",
    "01_rasterizer": """
assert (gilab.render(chol, 64, 96) - picture).abs().max() < 1e-5
assert int((picture[0] > 0).sum()) < 64 * 96 and (picture[0] > 0).any()
assert gilab.render(fitted, scale=6).shape == (3, 288, 288)
assert playground.renders >= 1 and len(playground.image.value) > 1000
assert len(playground.gaussians()) == 3
""",
    "02_gaussianimage_fitting": """
assert all(r.iterations == ITERS for r in [*fits.values(), *by_n.values(), *by_param.values()])
assert fits[1e-2].psnr > fits[1e-3].psnr, {lr: r.psnr for lr, r in fits.items()}
assert by_n[300].psnr > by_n[100].psnr, {n: r.psnr for n, r in by_n.items()}
assert final.iterations == 100 and not monitor.stopped and not monitor.running
assert final.psnr > final.history.psnr[0] + 8 and monitor.updates >= 1
""",
}


def read(name: str):
    return nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def text_of(cell) -> str:
    """The text a cell showed: streams and text/plain results (what nbval compares)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(f"[{out.name}] {out.text}")
        elif out.output_type in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
            if "application/vnd.jupyter.widget-view+json" not in out.data:
                parts.append(out.data["text/plain"])
        elif out.output_type == "error":
            parts.append(f"[error] {out.ename}: {out.evalue}")
    return "".join(parts)


def problems(nb) -> list[str]:
    """Errors and stderr output in an executed notebook, one line each."""
    found = []
    for i, cell in enumerate(code_cells(nb)):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"code cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                found.append(f"code cell {i} wrote to stderr: {out.text[:500]!r}")
    return found


def python3_kernelspec(root: Path) -> Path:
    """A ``python3`` kernelspec for *this* interpreter (the venv), so a user-wide one cannot take its place."""
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    return root


# ------------------------------------------------------------------ static: the committed files
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_small_executed_and_clean(name):
    path = NOTEBOOKS_DIR / f"{name}.ipynb"
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size:,} bytes (limit {MAX_BYTES:,})"
    nb = read(name)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"  # without it JupyterLab stops at "Select Kernel"
    cells = code_cells(nb)
    assert 'os.environ.get("GILAB_FAST") == "1"' in cells[0].source, "the first code cell reads GILAB_FAST"
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"run it top to bottom once before committing: {counts}"
    assert not problems(nb)
    pictures = sum("image/png" in out.get("data", {}) or "image/jpeg" in out.get("data", {})
                   for c in cells for out in c.outputs)
    assert pictures >= 3, "the committed notebook should show its pictures"


# ------------------------------------------------------------------ dynamic: a fresh run in fast mode
@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_fast_mode(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("GILAB_FAST", "1")
    monkeypatch.setenv("JUPYTER_PATH", str(python3_kernelspec(tmp_path / "jupyter")))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, not a test's Agg
    saved = read(name)
    nb = read(name)
    nb.cells.append(nbformat.v4.new_code_cell(CHECKS[name]))
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})  # writes (out/...) go to tmp
    start = time.perf_counter()
    client.execute()
    print(f"{name}: {time.perf_counter() - start:.1f} s in fast mode")
    assert not problems(nb), "\n".join(problems(nb))
    for before, after in zip(code_cells(saved), code_cells(nb)):
        if "NBVAL_CHECK_OUTPUT" in before.source:
            assert text_of(after) == text_of(before), f"output changed in cell:\n{before.source[:200]}"
    assert (tmp_path / "out").exists() or name != "00_quickstart"  # it wrote into its own folder
