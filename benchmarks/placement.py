"""Placement on Kodak: quad-tree init N and PSNR per image, and the time of each placement step on CPU.

    python benchmarks/placement.py [--repeats 3] [--images 24] [--backend torch] [--out figures/placement.json]

For every Kodak image (768x512):
- quad-tree init (reference thresholds, no fine-tuning): N, PSNR of its sum-blended render, and the time
  of the whole init and of its parts (cells, triangulation, Gaussians);
- placement from a given PPM (``place()``, k = 3, density 1): the time of dithering, triangulation,
  ellipse fitting, Gaussians (colour sampling), and of the whole chain. The PPM is the pseudo-PPM of the
  quad-tree init (a detail-following map like the generator's), computed outside the timings.
Times are medians over ``--repeats`` runs after a warm-up (numba compiles once, then its cache is used).
Writes a JSON summary and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

import gilab
from gilab.io import load_image
from gilab.machine import cpu_name
from gilab.placement import (
    dither,
    fit_ellipses,
    gaussians_from_triangles,
    place,
    pseudo_ppm,
    quadtree_init,
    triangulate,
)
from gilab.placement.quadtree import cell_centres, quadtree_cells


def timed(fn, repeats):
    """(result of the last call, median seconds over ``repeats`` calls)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def psnr(render, image):
    return -10 * math.log10(torch.mean((render.clamp(0, 1) - image) ** 2).item())


def measure(image, repeats, backend):
    _, height, width = image.shape
    row = {}
    # ---- quad-tree init, whole and by parts
    g, row["quadtree_s"] = timed(lambda: quadtree_init(image), repeats)
    cells, row["qt_cells_s"] = timed(lambda: quadtree_cells(image), repeats)
    tri, row["qt_triangulate_s"] = timed(lambda: triangulate(cell_centres(cells), height, width), repeats)
    _, row["qt_gaussians_s"] = timed(lambda: gaussians_from_triangles(tri.triangles, image), repeats)
    row["quadtree_n"] = len(g)
    with torch.no_grad():
        row["quadtree_psnr"] = psnr(gilab.render(g, height, width, blend="sum", backend=backend), image)
    # ---- placement from a given PPM, step by step
    ppm = pseudo_ppm(g, height, width)
    points, row["dither_s"] = timed(lambda: dither(ppm, 3, 1.0), repeats)
    tri, row["triangulate_s"] = timed(lambda: triangulate(points, height, width), repeats)
    _, row["ellipses_s"] = timed(lambda: fit_ellipses(tri.triangles), repeats)
    _, row["gaussians_s"] = timed(lambda: gaussians_from_triangles(tri.triangles, image), repeats)
    placed, row["place_s"] = timed(lambda: place(ppm, image, kernel_size=3), repeats)
    row["points"], row["place_n"] = len(points), len(placed)
    return row


STEPS = [("dither_s", "dither"), ("triangulate_s", "triangulate"), ("ellipses_s", "ellipses"),
         ("gaussians_s", "Gaussians"), ("place_s", "place() total"), ("qt_cells_s", "quad-tree cells"),
         ("qt_triangulate_s", "quad-tree triangulate"), ("qt_gaussians_s", "quad-tree Gaussians"),
         ("quadtree_s", "quad-tree init total")]


def print_table(rows, summary):
    print(f"{'image':8s} {'QT N':>7s} {'QT PSNR':>8s} {'QT s':>6s} {'points':>7s} {'place N':>8s} {'place s':>8s}")
    for r in rows:
        print(f"{r['image']:8s} {r['quadtree_n']:7,d} {r['quadtree_psnr']:8.2f} {r['quadtree_s']:6.3f} "
              f"{r['points']:7,d} {r['place_n']:8,d} {r['place_s']:8.3f}")
    print(f"{'mean':8s} {summary['quadtree_n']:7,.0f} {summary['quadtree_psnr']:8.2f} {summary['quadtree_s']:6.3f} "
          f"{summary['points']:7,.0f} {summary['place_n']:8,.0f} {summary['place_s']:8.3f}")
    print("\nstep times, mean over images (median of repeats), ms:")
    for key, name in STEPS:
        print(f"  {name:24s} {1000 * summary[key]:8.1f}")


def save_figure(rows, summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["image"].replace("kodim", "") for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), layout="constrained")
    axes[0].bar(names, [r["quadtree_n"] for r in rows], label="quad-tree init")
    axes[0].plot(names, [r["place_n"] for r in rows], "k.", label="place(), k=3, pseudo-PPM")
    top = max(max(r["quadtree_n"], r["place_n"]) for r in rows)
    axes[0].set(title="Gaussians per Kodak image", xlabel="kodim", ylim=(0, 1.3 * top))  # room for the legend
    axes[0].legend(fontsize=8, loc="upper left", ncols=2)
    axes[1].bar(names, [r["quadtree_psnr"] for r in rows], color="tab:green")
    axes[1].set(title=f"quad-tree init PSNR, no fine-tuning (mean {summary['quadtree_psnr']:.2f} dB)",
                xlabel="kodim", ylabel="dB", ylim=(min(r["quadtree_psnr"] for r in rows) - 2, None))
    labels = [name for _, name in STEPS]
    axes[2].barh(labels, [1000 * summary[key] for key, _ in STEPS], color="tab:orange")
    axes[2].invert_yaxis()
    axes[2].set(title="mean time per 768x512 image (CPU)", xlabel="ms")
    for ax in axes[:2]:
        ax.tick_params(axis="x", labelsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=24, help="the first N Kodak images")
    parser.add_argument("--backend", default="torch", help="render backend for the PSNR (sum blending)")
    parser.add_argument("--out", default="figures/placement.json")
    parser.add_argument("--data", default=os.environ.get("GILAB_DATA", "../shared/data"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    kodak = Path(args.data) / "kodak"
    paths = [kodak / f"kodim{i:02d}.png" for i in range(1, args.images + 1)]
    if not all(p.exists() for p in paths):
        raise SystemExit(f"Kodak not found under {kodak} (set GILAB_DATA)")
    measure(load_image(paths[0]), 1, args.backend)  # warm-up: numba loads, scipy and torch initialise
    rows = []
    for path in paths:
        row = {"image": path.stem, **measure(load_image(path), args.repeats, args.backend)}
        rows.append(row)
        print(f"{row['image']}: quad-tree N {row['quadtree_n']:,} PSNR {row['quadtree_psnr']:.2f} dB, "
              f"place() {row['place_s'] * 1000:.0f} ms", flush=True)
    keys = [k for k in rows[0] if k != "image"]
    summary = {k: statistics.fmean(r[k] for r in rows) for k in keys}
    print()
    print_table(rows, summary)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "load_average_at_end": os.getloadavg()[0],
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
            "render_backend": args.backend, "kernel_size": 3, "density": 1.0,
            "ppm": "pseudo_ppm(quadtree_init(image)), outside the timings"}
    out.write_text(json.dumps({"meta": meta, "mean": summary, "rows": rows}, indent=2))
    save_figure(rows, summary, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
