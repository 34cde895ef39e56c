"""What a study's results say: PSNR at a time or step, the time or steps a start needs to reach a PSNR, and the
speed-ups of one start over another, in seconds (time mode) and in iterations (iteration mode).

A speed-up is measured, never guessed: where the slower start did not reach the faster one's PSNR within its
run, the value is a lower bound and is marked as one (``(value, True)``), so a table can say "> 2.0x".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import GilabError

# Published numbers, labelled as theirs (docs/method.md, section 6): initialisation only, no fine-tuning, GPU.
REFERENCE = {
    "kodak": {"n": 42_858, "init_psnr": 29.68, "init_seconds": 0.25, "source": "Instant-GI README (GPU)"},
    "div2k_valid_x2": {"n": 76_985, "init_psnr": 29.67, "init_seconds": 0.43, "source": "Instant-GI README (GPU)"},
}
#: GaussianImage, Kodak, 70,000 Gaussians, 50,000 iterations (its Table 1; docs/method.md, section 6).
GAUSSIANIMAGE_KODAK = {"n": 70_000, "iterations": 50_000, "psnr": 44.08, "seconds": 107.0}


def load_runs(out: Path) -> list[dict]:
    """The per-image results under ``out`` (``<out>/runs/*.json``, or the files directly in ``out`` as committed in
    ``figures/study/``). Results of two configurations in one folder are refused (one line)."""
    out = Path(out)
    folder = out / "runs" if (out / "runs").is_dir() else out
    studies = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    studies = [s for s in studies if "runs" in s]  # not targets.json and the like
    configs = {json.dumps(_identity(s), sort_keys=True) for s in studies}
    if len(configs) > 1:
        raise GilabError(f"{folder} holds results of {len(configs)} different configurations; keep one per folder")
    return studies


def _identity(study: dict) -> dict:
    from .protocol import StudyConfig

    return StudyConfig.from_dict(study.get("config", {})).identity()


def run_of(study: dict, init: str) -> dict | None:
    return next((r for r in study["runs"] if r["init"] == init), None)


# ----------------------------------------------------------------------------------------- time
def psnr_at(run: dict, seconds: float, key: str = "seconds") -> float:
    """PSNR of a run at ``seconds`` (or at a step, with ``key="iteration"``): the last logged point not after it;
    NaN before the first."""
    best = math.nan
    for t, p in zip(run[key], run["psnr"]):
        if t > seconds:
            break
        best = p
    return best


def time_to_reach(run: dict, target_psnr: float, key: str = "seconds") -> float | None:
    """First logged time (or step, ``key="iteration"``) at which the run's PSNR reaches ``target_psnr``; None if
    it never does."""
    for t, p in zip(run[key], run["psnr"]):
        if p >= target_psnr:
            return t
    return None


def speedups(studies: list[dict], fast: str = "net", slow: str = "random") -> dict[float, list[tuple[float, bool]]]:
    """{budget B: [(speed-up, is_lower_bound) per image]}: the time ``slow`` needs to reach the PSNR that ``fast``
    has at B, divided by B. Where ``slow`` never gets there within its run: (its run's length / B, True)."""
    table: dict[float, list[tuple[float, bool]]] = {}
    for study in studies:
        a, b = run_of(study, fast), run_of(study, slow)
        if a is None or b is None:
            continue
        for snap in a["snapshots"]:
            budget = snap["budget"]
            reached = time_to_reach(b, snap["psnr"])
            if reached is None:
                table.setdefault(budget, []).append((b["seconds"][-1] / budget, True))
            else:
                table.setdefault(budget, []).append((reached / budget, False))
    return table


# ----------------------------------------------------------------------------------------- iterations
def milestones(iterations: int) -> list[int]:
    """1,000, 2,000, 5,000, 10,000, ... up to ``iterations`` (and ``iterations`` itself)."""
    marks, decade = [], 1000
    while decade <= iterations:
        marks += [m for m in (decade, 2 * decade, 5 * decade) if m <= iterations]
        decade *= 10
    return sorted(set(marks) | {iterations})


def iteration_speedups(studies: list[dict], fast: str = "net", slow: str = "random") -> dict[int, list[dict]]:
    """{milestone m: [per image: {"image", "target", "iterations", "speedup", "seconds_speedup", "bound",
    "ahead"}]}: ``slow``'s PSNR at step m is the target; the steps ``fast`` needs to reach it (the first logged
    step at or above it, so the speed-up is exact to the log spacing) give ``speedup`` = m / steps, and the same
    in seconds with the init included. ``bound``: ``fast`` never got there within its run; the speed-up is then
    at most m / (its run's length), which is what is reported. ``ahead``: fast's PSNR at step m >= slow's."""
    table: dict[int, list[dict]] = {}
    for study in studies:
        a, b = run_of(study, fast), run_of(study, slow)
        if a is None or b is None:
            continue
        for m in milestones(b["iteration"][-1]):
            target = psnr_at(b, m, "iteration")
            steps = time_to_reach(a, target, "iteration")
            slow_seconds = _seconds_at_step(b, m)
            row = {"image": study["image"], "target": target, "ahead": psnr_at(a, m, "iteration") >= target}
            if steps is None:
                row.update(iterations=None, speedup=m / a["iteration"][-1], seconds_speedup=math.nan, bound=True)
            else:
                fast_seconds = _seconds_at_step(a, steps)
                row.update(iterations=steps, speedup=m / max(steps, 1), bound=False,
                           seconds_speedup=slow_seconds / fast_seconds if fast_seconds > 0 else math.nan)
            table.setdefault(m, []).append(row)
    return table


def _seconds_at_step(run: dict, step: int) -> float:
    for t, i in zip(run["seconds"], run["iteration"]):
        if i >= step:
            return t
    return run["seconds"][-1]


# ----------------------------------------------------------------------------------------- small statistics
def mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def median(values) -> float:
    values = sorted(v for v in values if v is not None and not math.isnan(v))
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def mean_gradient(image) -> float:
    """Mean magnitude of the luminance gradient (finite differences) of a (3, H, W) image: a simple detail measure."""
    import torch

    gray = image.mean(0)
    gx = gray[:, 1:] - gray[:, :-1]
    gy = gray[1:, :] - gray[:-1, :]
    return float(torch.sqrt(gx[:-1] ** 2 + gy[:, :-1] ** 2).mean())
