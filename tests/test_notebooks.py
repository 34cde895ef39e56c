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
MAX_BYTES = 1_000_000

# Run after each notebook, in its kernel: what it must have achieved even in fast mode. One file per notebook,
# tests/notebook_checks/<name>.py; a notebook without one fails the test.
NOTEBOOKS = sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
CHECKS_DIR = Path(__file__).resolve().parent / "notebook_checks"


def checks_for(name: str) -> str:
    path = CHECKS_DIR / f"{name}.py"
    assert path.exists(), f"write tests/notebook_checks/{name}.py: what the notebook must achieve"
    return path.read_text()


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
    nb.cells.append(nbformat.v4.new_code_cell(checks_for(name)))
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
