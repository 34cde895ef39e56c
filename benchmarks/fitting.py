"""Fitting speed on the CPU: the fused training step (gilab.fused) against fit()'s autograd loop, side by side.

    python benchmarks/fitting.py              # three cases -> figures/fitting.json (a few minutes)
    python benchmarks/fitting.py --quick      # the two Kodak cases, fewer rounds
    nice python benchmarks/fitting.py --long  # 50,000 iterations of the fused step (kodim23, net start, 40k),
                                              # resumable: re-run to continue -> figures/fitting_long.json

Cases: kodim23 (768x512) with 40,000 Gaussians from GaussianImage's random start and from the shipped
generator's start; and 2040x1356 with 200,000 Gaussians from a random start, the image kodim23 upscaled
bicubically (DIV2K's size; no DIV2K image ships with gilab). Both paths train the same start with the recipe
(cholesky, lr 1e-3, sum blending, backend cpu) in one process, interleaved in rounds of a few iterations, so a
busy machine slows both alike; the ratio of each round is reported with the median.

Columns: iterations per second (wall clock, median over rounds); the speed-up (median of per-round ratios);
the render's share of an iteration (fused: its forward and backward passes, timed inside the step; autograd:
the ``cpu`` rasterizer's forward + backward timed separately on the same Gaussians); the share of the fp32 peak
(pixel-Gaussian evaluations inside the cutoff x the rasterizer benchmark's flop counts x it/s, over
``fp32_peak_gflops()``); peak memory (VmHWM above the resident set before the iterations, each path in a
fresh process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rasterizer import FLOPS_BACKWARD, FLOPS_FORWARD, _reset_peak_rss, _rss_mb, fp32_peak_gflops

CASES = {  # name: (image size (height, width) or None for Kodak's own, Gaussians, start)
    "kodim23, 40k, random start": (None, 40_000, "random"),
    "kodim23, 40k, net start": (None, 40_000, "net"),
    "2040x1356 (kodim23 upscaled), 200k, random start": ((1356, 2040), 200_000, "random"),
}
QUICK = list(CASES)[:2]
LONG_ITERS, LONG_CHECKPOINT = 50_000, 2_000


# ------------------------------------------------------------------------------------------------- setup
def make_case(name: str, cache: Path):
    """(target (3, H, W), start Gaussians) for a case; the start is saved in ``cache`` for the workers."""
    import torch

    from gilab import Gaussians2D
    from gilab.datasets import kodak
    from gilab.io import as_image
    from gilab.starts import make_start

    size, n, kind = CASES[name]
    image = as_image(kodak()[22])  # kodim23
    if size is not None:
        image = torch.nn.functional.interpolate(image[None], size=size, mode="bicubic", align_corners=False)[0]
        image = image.clamp(0, 1)
    path = cache / (name.replace(" ", "_").replace(",", "") + ".safetensors")
    if path.exists():  # safetensors: a cached start never runs code when it is read
        return image, Gaussians2D.load(path)
    if kind == "net":
        from gilab.generator import Generator

        start = Generator.from_pretrained()(image, target_count=n)
    else:
        start, _ = make_start("random", image, n)
    start.save(path)
    return image, start


def autograd_step(model, target, blend="sum"):
    """fit()'s loop body: a closure doing one autograd iteration (returns the loss)."""
    import torch

    from gilab.fitting import _adan
    from gilab.render import rasterize

    optimizer = _adan(model.parameters(), 1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20_000, gamma=0.5)
    _, height, width = target.shape

    def step():
        g = model.gaussians()
        render = rasterize(g.means, g.conics(), g.colors, g.opacities, height, width, blend, "cpu").clamp(0, 1)
        loss = torch.mean((render - target) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.item()

    return step


def make_steps(target, start):
    """{"autograd": step, "fused": step} on two copies of the same start; and the fused FusedStep."""
    from gilab.fitting import GaussianImageModel
    from gilab.fused import FusedStep

    _, height, width = target.shape
    fused = FusedStep(GaussianImageModel(start, height, width), target)
    return {"autograd": autograd_step(GaussianImageModel(start, height, width), target), "fused": fused.step}, fused


# ------------------------------------------------------------------------------------------------ speed
def speed(name: str, cache: Path, rounds: int) -> dict:
    """Interleaved rounds of both paths on one case: it/s, ratio, render share, evaluations."""
    target, start = make_case(name, cache)
    steps, fused = make_steps(target, start)
    for step in steps.values():  # compile / load kernels, import pytorch-optimizer, settle the allocators
        for _ in range(3):
            step()
    per_round = max(2, min(10, round(2.0 / _seconds_per(steps["autograd"]))))
    wall = {k: [] for k in steps}
    cpu = {k: [] for k in steps}
    fused.seconds = dict.fromkeys(fused.seconds, 0.0)
    for _ in range(rounds):
        for key, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                step()
            wall[key].append((time.perf_counter() - t0) / per_round)
            cpu[key].append((time.process_time() - c0) / per_round)
    fused_total = sum(fused.seconds.values())
    row = {"case": name, "iterations_per_round": per_round, "rounds": rounds,
           "wall_s": wall, "cpu_s": cpu,
           "fused_stage_share": {k: v / fused_total for k, v in fused.seconds.items()},
           "render_share_fused": (fused.seconds["forward"] + fused.seconds["backward"]) / fused_total,
           "render_share_autograd": _autograd_render_seconds(fused) / _median(wall["autograd"]),
           "evaluations": _evaluations(fused)}
    for key in steps:
        row[f"{key}_it_s"] = 1 / _median(wall[key])
        row[f"{key}_cpu_it_s"] = 1 / _median(cpu[key])
    row["speedup"] = _median([a / f for a, f in zip(wall["autograd"], wall["fused"])])
    row["speedup_cpu_time"] = _median([a / f for a, f in zip(cpu["autograd"], cpu["fused"])])
    return row


def _seconds_per(step) -> float:
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


def _median(values) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _autograd_render_seconds(fused, repeats: int = 5) -> float:
    """The ``cpu`` rasterizer's forward + backward on the fused model's current Gaussians (best of a few)."""
    import torch

    from gilab.render import rasterize

    g = fused.model.gaussians()
    leaves = [t.detach().clone().requires_grad_() for t in (g.means, g.conics(), g.colors, g.opacities)]
    grad = torch.rand(3, fused.height, fused.width)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        rasterize(*leaves, fused.height, fused.width, "sum", "cpu").backward(grad)
        best = min(best, time.perf_counter() - t)
    return best


def _evaluations(fused) -> int:
    """Pixel-Gaussian pairs inside the cutoff for the fused model's last prepared Gaussians."""
    import torch

    from gilab.render.cpu import evaluations

    means, conics, opacities = (torch.from_numpy(a) for a in (fused.means, fused.conics, fused.opacities))
    return evaluations(means, conics, opacities, fused.height, fused.width)


# ----------------------------------------------------------------------------------------------- memory
def memory_worker(name: str, cache: str, path: str) -> dict:
    """Peak resident memory one path adds over 5 iterations (after 2 warm-ups), in this fresh process."""
    target, start = make_case(name, Path(cache))
    steps, _ = make_steps(target, start)
    step = steps[path]
    del steps
    for _ in range(2):
        step()
    exact = _reset_peak_rss()
    base = _rss_mb("VmRSS")
    for _ in range(5):
        step()
    return {"peak_mb": _rss_mb("VmHWM") - base if exact else float("nan"), "resident_mb": _rss_mb("VmHWM")}


def memory(name: str, cache: Path, path: str) -> dict:
    spec = json.dumps([name, str(cache), path])
    proc = subprocess.run([sys.executable, __file__, "--memory-worker", spec], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ long fit
def long_fit(out: Path, cache: Path) -> dict:
    """50,000 fused iterations on kodim23 from the net start (40k), checkpointed every LONG_CHECKPOINT
    iterations to ``cache`` (the parameters and Adan's state, 7 MB: not for the repository) so that a killed run
    continues where it stopped; ``out`` gets the log."""
    import math

    import numpy as np
    import torch

    target, start = make_case("kodim23, 40k, net start", cache)
    _, fused = make_steps(target, start)
    state_path = cache / f"{out.stem}_state.npz"
    log = {"iterations": 0, "seconds": 0.0, "segments": []}
    if state_path.exists() and out.exists():
        log = json.loads(out.read_text())
        saved = np.load(state_path)
        with torch.no_grad():
            for name, p in zip(("xyz", "colors", "cholesky"), (fused.model.xyz, fused.model.colors,
                                                                fused.model.cholesky)):
                p.copy_(torch.from_numpy(saved[name]))
        for name in fused.state:
            fused.state[name][:] = saved["state_" + name]
        fused.iteration = log["iterations"]
    while fused.iteration < LONG_ITERS:
        todo = min(LONG_CHECKPOINT, LONG_ITERS - fused.iteration)
        t = time.perf_counter()
        for _ in range(todo):
            loss = fused.step()
        seconds = time.perf_counter() - t
        log["iterations"] = fused.iteration
        log["seconds"] += seconds
        log["segments"].append({"iterations": todo, "seconds": seconds, "psnr": -10 * math.log10(loss),
                                "load_average": os.getloadavg()[0]})
        m = fused.model
        np.savez(state_path, xyz=m.xyz.detach().numpy(), colors=m.colors.detach().numpy(),
                 cholesky=m.cholesky.detach().numpy(), **{"state_" + k: v for k, v in fused.state.items()})
        out.write_text(json.dumps(log, indent=1))
        print(f"{fused.iteration} iterations, {log['seconds']:.0f} s, PSNR {log['segments'][-1]['psnr']:.2f} dB, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    return log


# ------------------------------------------------------------------------------------------------ main
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the two Kodak cases, fewer rounds")
    parser.add_argument("--long", action="store_true", help="the 50,000-iteration fused fit (resumable)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case (default 7)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = Path(tempfile.gettempdir()) / "gilab_fitting_benchmark"
    cache.mkdir(exist_ok=True)
    if args.memory_worker:
        print(json.dumps(memory_worker(*json.loads(args.memory_worker))))
        return
    if args.long:
        out = args.out or ROOT / "figures" / "fitting_long.json"
        log = long_fit(out, cache)
        print(f"{log['iterations']} iterations in {log['seconds'] / 60:.1f} min")
        return

    import numba
    import torch

    peak, peak_how = fp32_peak_gflops()
    print(f"fp32 peak ~{peak:.0f} GFLOP/s ({peak_how}); numba {numba.__version__}, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    for name in QUICK if args.quick else CASES:
        row = speed(name, cache, args.rounds or (4 if args.quick else 7))
        row["peak_share_fused"] = row["evaluations"] * (FLOPS_FORWARD + FLOPS_BACKWARD) * row["fused_it_s"] / 1e9 / peak
        row["peak_share_autograd"] = (row["evaluations"] * (FLOPS_FORWARD + FLOPS_BACKWARD) * row["autograd_it_s"]
                                      / 1e9 / peak)
        row["memory"] = {path: memory(name, cache, path) for path in ("autograd", "fused")}
        rows.append(row)
        mem = row["memory"]
        print(f"{name}: autograd {row['autograd_it_s']:.1f} it/s, fused {row['fused_it_s']:.1f} it/s, "
              f"x{row['speedup']:.2f} (CPU time x{row['speedup_cpu_time']:.2f}); render share "
              f"{100 * row['render_share_autograd']:.0f} % / {100 * row['render_share_fused']:.0f} %; "
              f"fp32 peak {100 * row['peak_share_autograd']:.1f} % / {100 * row['peak_share_fused']:.1f} %; "
              f"peak MB {mem['autograd'].get('peak_mb', float('nan')):.0f} / {mem['fused'].get('peak_mb', float('nan')):.0f}"
              f"; load {os.getloadavg()[0]:.1f}", flush=True)
    from gilab.machine import cpu_name  # here, not at the top: gilab loads numba and torch
    meta = {"machine": cpu_name(), "cores": os.cpu_count(), "fp32_peak_gflops": peak,
            "fp32_peak_estimate": peak_how, "numba": numba.__version__, "torch": torch.__version__,
            "numba_threads": numba.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "flops_per_evaluation": FLOPS_FORWARD + FLOPS_BACKWARD, "load_average_at_end": os.getloadavg()}
    out = args.out or ROOT / "figures" / ("fitting_quick.json" if args.quick else "fitting.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
