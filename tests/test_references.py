"""Every citation points at a file a reader has.

The repository's text (code, Markdown, notebooks' cell sources, pyproject.toml, the Makefile) may cite the method's
reference (``docs/method.md``), the model card and modules by path; each such path must exist. It must not cite the
project's private design notes, which are not in the repository. Notebook outputs are left out: they are what a run
printed, not text anyone wrote.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".md", ".ipynb", ".toml"}
NAMES = {"Makefile"}
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "node_modules", "__pycache__", ".ipynb_checkpoints"}

#: Paths inside the repository, as text cites them: ``docs/....md``, ``gilab/....py`` or ``gilab/....md``.
#: (Not preceded by a path character, so ``site-packages/gilab/x.py`` or a URL's ``.../gilab/x.py`` do not count.)
PATH = re.compile(r"(?<![\w./-])(docs/[\w./-]+?\.md|gilab/[\w/]+\.(?:py|md))(?![\w/])")
#: The design notes kept outside the repository.
PRIVATE = re.compile(r"DESIGN\.md|shared/notes|\bnotes/[\w-]+\.md")


def _text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
        paths = [ROOT / line for line in out]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        paths = [p for p in ROOT.rglob("*") if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)]
    here = Path(__file__).resolve()  # this file spells the patterns out, and its examples cite on purpose
    return sorted(p for p in paths if p.is_file() and (p.suffix in SUFFIXES or p.name in NAMES) and p.resolve() != here)


def _written_text(path: Path) -> str:
    """The file's text; for a notebook, only its cells' sources."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".ipynb":
        return text
    cells = json.loads(text).get("cells", [])
    return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells)


FILES = _text_files()


def test_the_scan_sees_the_repository():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "docs/method.md", "gilab/__init__.py"} <= names
    assert "tests/test_references.py" not in names
    assert any(n.endswith(".ipynb") for n in names)


def test_the_method_reference_is_in_the_repository():
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    for n in range(1, 8):  # code cites "docs/method.md, section N"
        assert re.search(rf"^## {n}\. ", text, re.MULTILINE), f"docs/method.md has no section {n}"


def test_no_citation_of_the_private_design_notes():
    found = []
    for path in FILES:
        for i, line in enumerate(_written_text(path).splitlines(), 1):
            if PRIVATE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert not found, "cites notes that are not in the repository:\n" + "\n".join(found)


def test_every_cited_path_exists():
    missing = []
    for path in FILES:
        for i, line in enumerate(_written_text(path).splitlines(), 1):
            for cited in PATH.findall(line):
                if not (ROOT / cited).exists():
                    missing.append(f"{path.relative_to(ROOT)}:{i}: {cited}")
    assert not missing, "cites files that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("line, cited", [
    ("see `docs/method.md`, section 2", ["docs/method.md"]),
    ("(docs/method.md, 4.3-4.5)", ["docs/method.md"]),
    ("``gilab/generator/colour_step.py``", ["gilab/generator/colour_step.py"]),
    ("`gilab/weights/MODEL_CARD.md`.", ["gilab/weights/MODEL_CARD.md"]),
    ("site-packages/gilab/io.py and https://example.org/gilab/x.py", []),
    ("gilab/render/*.py", []),
])
def test_the_path_pattern(line, cited):
    assert PATH.findall(line) == cited
