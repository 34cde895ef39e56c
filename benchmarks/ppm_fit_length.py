"""How long to fit before taking a pseudo-PPM: the curve that chooses ``prepare-ppm --iters`` (issue 18).

    GILAB_DATA=/work/shared/data python benchmarks/ppm_fit_length.py [--images 4] [--max-iters 10000] \
        [--out figures/ppm_fit_length.json]

The paper makes its position-field targets from 50,000-iteration GaussianImage fits; gilab's ``prepare-ppm``
fits the quad-tree start for ``--iters`` iterations first (``gilab.training.targets.ppm_from_image``). This
script measures what a longer fit changes in the map. Per BSDS500 train image (``--images`` of them, spread over
the sorted list), one fit from the quad-tree start to ``--max-iters`` with ``ppm_from_image``'s recipe; at each
checkpoint K the pseudo-PPM of the Gaussians as they are then. (The fit's learning rate steps at 20,000
iterations, so for K <= 20,000 the snapshot at K is exactly ``ppm_from_image(iters=K)``.) Each map is compared
with the last one (the longest fit, standing in for a converged one): the share of the PPM mass in 8x8-pixel blocks
that differs, and the correlation. The share of the change made by K is 1 - d(K, last) / d(0, last): how much of
the way from the quad-tree's map to the long fit's map K iterations go; the departure d(K, 0) / d(last, 0) how far
from the quad-tree's map K iterations have moved it, as a share of the long fit's move (``summarise``). The
curves, not a threshold, choose the length: figures/README.md says how.

Resumable: each image's curve is kept in ``--cache`` (JSON, keyed by the settings) as soon as it is done.
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

from generator_ablation import evenly, fingerprint, mass_moved

CHECKPOINTS = (0, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
BLOCK = 8  # px: the scale at which the PPM's mass is compared (a few Gaussians' neighbourhood at BSDS density)


def correlation(a, b) -> float:
    import torch

    return float(torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1])


def image_curve(image, checkpoints: list[int], seed: int = 0, backend: str = "auto") -> list[dict]:
    """One fit from the quad-tree start to max(checkpoints); per checkpoint K its PPM against the last one.

    Returns one row per K: iteration, seconds (fit time to K, the quad-tree init excluded), PSNR (dB),
    n, and mass_moved / correlation against the last checkpoint's map and against the quad-tree's (K = 0).
    """
    from gilab.fitting import fit
    from gilab.placement.pseudo_ppm import pseudo_ppm
    from gilab.placement.quadtree import quadtree_init

    _, height, width = image.shape
    start = quadtree_init(image, seed=seed)
    maps = {0: pseudo_ppm(start, height, width)}  # the quad-tree's own map: what prepare-ppm --iters 0 gives
    rows = {}
    t0 = time.perf_counter()

    def snapshot(state):
        if state.iteration in checkpoints:
            maps[state.iteration] = pseudo_ppm(state.gaussians, height, width)
            rows[state.iteration] = {"iteration": state.iteration, "seconds": time.perf_counter() - t0,
                                     "psnr": state.psnr}

    every = _gcd(checkpoints)
    result = fit(image, init=start, iters=max(checkpoints), param="rs", seed=seed, backend=backend,
                 progress=False, return_on_interrupt=False, callback=snapshot, callback_every=every)
    last = max(checkpoints)  # the callback also runs after the last iteration, so maps has it
    rows[0] = {"iteration": 0, "seconds": 0.0, "psnr": result.history.psnr[0]}
    out = []
    for k in sorted(maps):
        out.append(rows[k] | {"n": len(start),
                              "mass_moved_vs_last": round(mass_moved(maps[k], maps[last], BLOCK), 5),
                              "correlation_vs_last": round(correlation(maps[k], maps[last]), 5),
                              "mass_moved_vs_quadtree": round(mass_moved(maps[k], maps[0], BLOCK), 5)})
    return out


def _gcd(values) -> int:
    import math

    g = 0
    for v in values:
        g = math.gcd(g, v)
    return max(g, 1)


def summarise(curves: dict[str, list[dict]]) -> dict:
    """The mean curve over images, with two ratios per K (mean and smallest over images):

    - share_of_change, 1 - d(K, last) / d(0, last): how much of the way from the quad-tree's map to the
      longest fit's map K iterations go;
    - departure, d(K, 0) / d(last, 0): how far the map has moved from the quad-tree's, as a share of how far
      the longest fit moves it.

    If the fit only drifted toward one map, the two would agree; where the departure levels off while the share
    of the change keeps climbing, the map no longer moves away from the start, it reshuffles.
    """
    ks = [r["iteration"] for r in next(iter(curves.values()))]
    rows = []
    for i, k in enumerate(ks):
        per = [c[i] for c in curves.values()]
        shares = [1 - r["mass_moved_vs_last"] / c[0]["mass_moved_vs_last"] for r, c in zip(per, curves.values())
                  if c[0]["mass_moved_vs_last"] > 0]
        departures = [r["mass_moved_vs_quadtree"] / c[-1]["mass_moved_vs_quadtree"]
                      for r, c in zip(per, curves.values()) if c[-1]["mass_moved_vs_quadtree"] > 0]
        rows.append({"iteration": k, "psnr": statistics.fmean(r["psnr"] for r in per),
                     "seconds": statistics.fmean(r["seconds"] for r in per),
                     "mass_moved_vs_last": statistics.fmean(r["mass_moved_vs_last"] for r in per),
                     "mass_moved_vs_quadtree": statistics.fmean(r["mass_moved_vs_quadtree"] for r in per),
                     "correlation_vs_last": statistics.fmean(r["correlation_vs_last"] for r in per),
                     "share_of_change": statistics.fmean(shares) if shares else 1.0,
                     "share_of_change_min": min(shares) if shares else 1.0,
                     "departure": statistics.fmean(departures) if departures else 1.0,
                     "departure_min": min(departures) if departures else 1.0})
    return {"mean": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=4, help="BSDS500 train images, spread over the sorted list")
    p.add_argument("--checkpoints", type=int, nargs="+", default=list(CHECKPOINTS),
                   help="fit lengths to compare (the largest is the reference)")
    p.add_argument("--max-iters", type=int, default=None, help="drop checkpoints beyond this (default: none)")
    p.add_argument("--cache", type=Path, default=Path("out/ppm_fit_length"))
    p.add_argument("--out", type=Path, default=Path("figures/ppm_fit_length.json"))
    args = p.parse_args(argv)
    checkpoints = sorted({k for k in args.checkpoints if args.max_iters is None or k <= args.max_iters} | {0})
    if len(checkpoints) < 3 or checkpoints[0] < 0 or args.images < 1:
        print("need at least two positive checkpoints and --images >= 1", file=sys.stderr)
        return 2

    import torch

    from gilab.io import load_image

    root = Path(os.environ.get("GILAB_DATA", "data")) / "train" / "bsds500" / "train"
    paths = evenly(sorted(root.glob("*.jpg")), args.images)
    if len(paths) < args.images:
        print(f"{root}: found {len(paths)} of {args.images} train images (set GILAB_DATA)", file=sys.stderr)
        return 2
    key = fingerprint({"checkpoints": checkpoints, "param": "rs", "seed": 0, "block": BLOCK})
    args.cache.mkdir(parents=True, exist_ok=True)
    curves = {}
    for path in paths:
        cached = args.cache / f"{path.stem}-{key}.json"
        if cached.exists():
            curves[path.name] = json.loads(cached.read_text())
            continue
        curve = image_curve(load_image(path), checkpoints)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(curve))
        tmp.replace(cached)  # atomic: a killed run leaves no half-written curve
        curves[path.name] = curve
        print(path.name, " ".join(f"{r['iteration']}: {r['psnr']:.1f} dB {r['mass_moved_vs_last']:.3f}"
                                  for r in curve), flush=True)

    summary = summarise(curves)
    from gilab.machine import cpu_name  # here, not at the top: gilab loads numba and torch
    out = {"benchmark": "pseudo-PPM against fit length (the choice of prepare-ppm --iters)",
           "images": list(curves), "checkpoints": checkpoints, "param": "rs", "block_px": BLOCK,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(),
                       "torch": torch.__version__, "load_average": list(os.getloadavg())},
           "summary": summary, "per_image": curves}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for r in summary["mean"]:
        print(f"K {r['iteration']:>6}: PSNR {r['psnr']:.2f} dB, {r['seconds']:.1f} s, mass moved vs K={checkpoints[-1]} "
              f"{r['mass_moved_vs_last']:.4f}, share of the change {r['share_of_change']:.2f} "
              f"(min {r['share_of_change_min']:.2f}), departure {r['departure']:.2f} (min {r['departure_min']:.2f})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
