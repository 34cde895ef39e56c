"""Is the colour step worth its time? ISRA steps on the start against fine-tuning for the same time.

    GILAB_DATA=/work/shared/data python benchmarks/colour_steps.py [--steps 3] [--out figures/colour_steps.json]

The shipped start is the fields' Gaussians after one ISRA colour step (``gilab/generator/colour_step.py``). Each
step raises the start's PSNR, so issue 18's "start as shipped" target could be bought with more of them. This
measures whether a step is a gain or only work moved from the fine-tuner into the init: per image, the start
with the fields' colours and after 1..``--steps`` steps (PSNR, the steps' time), and beside each the fields'
start fine-tuned with fit()'s recipe (Cholesky, Adan, ``cpu`` backend) for as long as those steps took, timed in
the same process (the best PSNR its curve reached by then). Scored on held-out BSDS500 val (sorted[10:40], as
``generator_val.py``: the model choice) and on Kodak (reported), at the paper's count scaled to the image
(42,858 on Kodak). Timings on a shared 2-core machine are noisy; both sides of each comparison are measured
back to back on the same image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from generator_ablation import scaled_count


def start_after_steps(gen, image, steps: int) -> tuple[list[float], list[float], object]:
    """PSNR (dB) of the fields' start and after 1..steps ISRA steps, the steps' cumulative time (s; 0 for the
    fields), and the fields' start (Gaussians2D)."""
    import torch

    import gilab
    from gilab.generator.colour_step import apply_colour_step
    from gilab.metrics import psnr

    height, width = image.shape[-2:]
    with torch.no_grad():
        fields = gen(image, colour_step=False, target_count=scaled_count(height, width))
    current, psnrs, seconds, elapsed = fields, [], [], 0.0
    for k in range(steps + 1):
        if k:
            tic = time.perf_counter()
            current = apply_colour_step(current, image)
            elapsed += time.perf_counter() - tic
        with torch.no_grad():
            psnrs.append(float(psnr(gilab.render(current, height, width).clamp(0, 1), image)))
        seconds.append(elapsed)
    return psnrs, seconds, fields


def fine_tune_for(image, start, seconds: float) -> tuple[float, int]:
    """(PSNR dB, iterations) of the start fine-tuned with fit()'s recipe until ``seconds`` of iterations ran:
    the best PSNR the fine-tuner had reached by then (its curve is read at each iteration's end)."""
    from gilab.fitting import fit

    result = fit(image, init=start, seconds=max(seconds, 1e-3) + 0.5, backend="cpu", progress=False)
    history = result.history
    t0 = history.seconds[0]
    reached = [(p, i) for s, p, i in zip(history.seconds, history.psnr, history.iteration) if s - t0 <= seconds]
    return max(reached)


def score_image(gen, image, steps: int) -> dict:
    """psnr_steps[k]: the start after k ISRA steps (k = 0: the fields' colours; 1: as shipped);
    fine_tune[k - 1]: the fields' start fine-tuned for as long as k steps took instead."""
    psnrs, seconds, fields = start_after_steps(gen, image, steps)
    row = {"n": len(fields), "psnr_steps": psnrs, "seconds_steps": seconds, "fine_tune": []}
    for k in range(1, steps + 1):
        psnr, iterations = fine_tune_for(image, fields, seconds[k])
        row["fine_tune"].append({"steps": k, "seconds": seconds[k], "psnr": psnr, "iterations": iterations})
    return row


def summarise(rows: list[dict], steps: int) -> dict:
    out = {"psnr_steps": [statistics.fmean(r["psnr_steps"][k] for r in rows) for k in range(steps + 1)],
           "seconds_steps": [statistics.fmean(r["seconds_steps"][k] for r in rows) for k in range(steps + 1)],
           "fine_tune": []}
    for k in range(1, steps + 1):
        ft = [r["fine_tune"][k - 1] for r in rows]
        gain = [r["psnr_steps"][k] - f["psnr"] for r, f in zip(rows, ft)]
        out["fine_tune"].append({"steps": k, "psnr": statistics.fmean(f["psnr"] for f in ft),
                                 "iterations": statistics.fmean(f["iterations"] for f in ft),
                                 "steps_minus_fine_tune": statistics.fmean(gain),
                                 "images_steps_ahead": sum(g > 0 for g in gain)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3, help="ISRA steps (the shipped start takes 1)")
    p.add_argument("--val-skip", type=int, default=10)
    p.add_argument("--val-count", type=int, default=30)
    p.add_argument("--kodak-limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("figures/colour_steps.json"))
    args = p.parse_args(argv)
    if args.steps < 1:
        print("--steps must be at least 1", file=sys.stderr)
        return 2

    import torch

    from gilab.generator import Generator
    from gilab.io import load_image
    from gilab.study.protocol import weights_fingerprint

    data = Path(os.environ.get("GILAB_DATA", "data"))
    sets = {"bsds_val": sorted((data / "train" / "bsds500" / "val").glob("*.jpg"))[args.val_skip:
                                                                                    args.val_skip + args.val_count],
            "kodak": sorted((data / "kodak").glob("*.png"))[:args.kodak_limit]}
    if len(sets["bsds_val"]) < args.val_count or not sets["kodak"]:
        print(f"{data}: needs {args.val_count} BSDS500 val images after the first {args.val_skip} and Kodak "
              "(set GILAB_DATA)", file=sys.stderr)
        return 2
    gen = Generator.from_pretrained().eval()
    warm = load_image(sets["kodak"][0])
    score_image(gen, warm[:, :128, :128].contiguous(), 1)  # numba and the allocator warm up once per process
    results = {}
    for name, paths in sets.items():
        rows = []
        for path in paths:
            row = {"image": path.name} | score_image(gen, load_image(path), args.steps)
            rows.append(row)
            print(name, path.name, " ".join(f"{x:.2f}" for x in row["psnr_steps"]), "| fine-tune",
                  " ".join(f"{f['psnr']:.2f} ({f['iterations']} it)" for f in row["fine_tune"]), flush=True)
        results[name] = {"summary": summarise(rows, args.steps), "per_image": rows}
    from gilab.machine import cpu_name  # here, not at the top: gilab loads numba and torch
    out = {"benchmark": "ISRA colour steps after the fields against fine-tuning the fields' start as long",
           "weights_sha256": weights_fingerprint(), "steps": args.steps,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(),
                       "torch": torch.__version__, "load_average": list(os.getloadavg())},
           **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, r in results.items():
        s = r["summary"]
        print(f"{name}: start after 0..{args.steps} steps " + " / ".join(f"{x:.2f}" for x in s["psnr_steps"]) +
              " dB; the same time fine-tuning: " + " / ".join(
                  f"{f['psnr']:.2f} dB ({f['steps_minus_fine_tune']:+.2f}, steps ahead on {f['images_steps_ahead']}"
                  f"/{len(r['per_image'])})" for f in s["fine_tune"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
