"""Set-up files agree with each other (pyproject.toml, environment.yml, Makefile, .ci/run), and the code lints clean."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {requirement_name(s): s.replace(" ", "") for s in specs}


def environment_requirements() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    specs = [line.strip()[2:] for line in lines[start + 1:] if line.strip().startswith("- ")]
    return {requirement_name(s): s.replace(" ", "") for s in specs if not s.startswith("-e")}


def test_environment_yml_mirrors_pyproject():
    ours, conda = pyproject_requirements(), environment_requirements()
    assert set(ours) == set(conda), f"only in pyproject: {set(ours) - set(conda)}; only in environment.yml: " \
                                    f"{set(conda) - set(ours)}"
    for name, spec in ours.items():
        if name == "torch":  # pinned where installed (Makefile, environment.yml); a range in the package metadata
            continue
        assert conda[name] == spec, f"{name}: pyproject {spec} vs environment.yml {conda[name]}"


def test_torch_pin_is_the_same_everywhere():
    make_pin = re.search(r"TORCH \?= (\S+)", (ROOT / "Makefile").read_text()).group(1)
    assert environment_requirements()["torch"] == make_pin == "torch==2.13.0"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert re.search(r"^make test$", (ROOT / ".ci/run").read_text(), re.MULTILINE)


def test_gsplat_needs_packaging_declared():
    assert "packaging" in pyproject_requirements()


def test_code_and_notebooks_pass_ruff():
    """The package, tests, benchmarks and notebooks lint clean (pyproject.toml's [tool.ruff] settings)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
