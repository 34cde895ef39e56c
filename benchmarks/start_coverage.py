"""How many Gaussians cover a pixel at the start of a fit: what one iteration costs, for each start.

    GILAB_DATA=/work/shared/data python benchmarks/start_coverage.py [--out figures/start_coverage.json]
    ... --fit-iters 1000 --fit-limit 4      # also after the codec's float fit, on the first 4 images

A sum-blend render, forward or backward, does work per pixel-Gaussian pair inside the cutoff (o exp(-sigma) >=
1/255), so that count over the image's pixels (the Gaussians covering an average pixel) sets the price of a fit
iteration, whatever the machine. This counts it, with the `cpu` kernels' own test (``gilab.render.cpu.evaluations``;
nothing is timed), for the network's start (density gain and net-zoom) and GaussianImage's random start, on all 24
Kodak images, at the compression codec's counts (1,150 / 2,600 / 5,700 Gaussians, about 0.15 / 0.3 / 0.6 bpp)
and at 40,000. The random start begins with small Gaussians on an almost empty canvas and grows them; the
network's start covers the picture from the first iteration, so at equal time the random start gets more
iterations: the figure behind the codec's time budgets (figures/README.md, compression). With ``--fit-iters K``
the net-zoom and random starts at the codec's counts are also fitted for K iterations as the codec's float fit
does (fit(), learning rate 1e-2, the fused `cpu` step on one thread), and the coverage, the iterations per
second and the PSNR at the end are recorded: where the two starts' Gaussians end up, and what an iteration costs
on the way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

COUNTS = (1150, 2600, 5700, 40_000)
CODEC_COUNTS = COUNTS[:3]
KINDS = ("net-zoom", "net", "random")
FITTED = ("net-zoom", "random")
CODEC_LR = 1e-2  # gilab.codec.compress's float fit


def coverage(gaussians, height: int, width: int) -> float:
    """Gaussians per pixel inside the cutoff, on average over the (height, width) image."""
    from gilab.render.cpu import evaluations

    leaves = gaussians.means, gaussians.conics(), gaussians.opacities
    return evaluations(*(t.detach().float() for t in leaves), height, width) / (height * width)


def fit_row(gen, path, n: int, kind: str, iters: int) -> dict:
    """The codec's float fit from one start: coverage before and after, iterations per second, PSNR."""
    import torch

    from gilab.fitting import fit
    from gilab.io import load_image
    from gilab.starts import make_start

    image = load_image(path)
    height, width = image.shape[-2:]
    with torch.no_grad():
        start, _ = make_start(kind, image, n, seed=0, generator=gen)
    result = fit(image, init=start, iters=iters, lr=CODEC_LR, backend="cpu", progress=False)
    row = {"image": path.stem, "n": n, "start": kind, "coverage_start": round(coverage(start, height, width), 3),
           "coverage_end": round(coverage(result.gaussians, height, width), 3),
           "iterations_per_second": round(result.iterations_per_second, 1), "psnr_end": round(result.psnr, 2)}
    print(f"{path.stem} N {n} {kind}: {row['coverage_start']:.1f} -> {row['coverage_end']:.1f} Gaussians per "
          f"pixel, {row['iterations_per_second']:.0f} it/s, {row['psnr_end']:.2f} dB after {iters}", flush=True)
    return row


def fitted_summary(rows: list[dict]) -> dict:
    """Per count and start: median coverage at the start and the end, it/s, PSNR; and the net-zoom / random
    ratio of iteration rates (median over images)."""
    out = {}
    for n in CODEC_COUNTS:
        at = {kind: {r["image"]: r for r in rows if r["n"] == n and r["start"] == kind} for kind in FITTED}
        out[str(n)] = {kind: {key: round(statistics.median(r[key] for r in at[kind].values()), 2)
                              for key in ("coverage_start", "coverage_end", "iterations_per_second", "psnr_end")}
                       for kind in FITTED}
        out[str(n)]["rate_ratio_net_zoom_to_random"] = round(statistics.median(
            at["net-zoom"][i]["iterations_per_second"] / at["random"][i]["iterations_per_second"] for i in at["random"]), 2)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "figures" / "start_coverage.json")
    parser.add_argument("--limit", type=int, default=None, help="only the first LIMIT Kodak images")
    parser.add_argument("--fit-iters", type=int, default=0, help="also fit the codec's starts this long")
    parser.add_argument("--fit-limit", type=int, default=4, help="... on this many images")
    args = parser.parse_args(argv)
    from gilab import datasets
    from gilab.errors import GilabError

    try:
        paths = datasets.kodak()[: args.limit]
    except GilabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import torch

    from gilab.generator import Generator
    from gilab.io import load_image
    from gilab.starts import make_start
    from gilab.study.protocol import weights_fingerprint

    gen = Generator.from_pretrained().eval()
    rows = []
    with torch.no_grad():
        for path in paths:
            image = load_image(path)
            height, width = image.shape[-2:]
            for n in COUNTS:
                row = {"image": path.stem, "n": n}
                for kind in KINDS:
                    start, _ = make_start(kind, image, n, seed=0, generator=gen)
                    row[kind] = round(coverage(start, height, width), 3)
                rows.append(row)
            print(f"{path.stem}: " + "; ".join(f"N {r['n']}: " + ", ".join(f"{k} {r[k]:.1f}" for k in KINDS)
                                               for r in rows[-len(COUNTS):]), flush=True)
    fitted = [fit_row(gen, path, n, kind, args.fit_iters) for path in paths[: args.fit_limit]
              for n in CODEC_COUNTS for kind in FITTED] if args.fit_iters > 0 else []
    summary = {str(n): {kind: {"median": round(statistics.median(r[kind] for r in rows if r["n"] == n), 2),
                               "min": min(r[kind] for r in rows if r["n"] == n),
                               "max": max(r[kind] for r in rows if r["n"] == n)} for kind in KINDS}
               for n in COUNTS}
    out = {"benchmark": __doc__.split("\n")[0], "unit": "Gaussians per pixel inside the cutoff (o exp(-sigma) >= 1/255)",
           "weights_sha256": weights_fingerprint(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "images": len(paths), "summary": summary, "rows": rows}
    if fitted:
        out["fitted"] = {"iterations": args.fit_iters, "lr": CODEC_LR, "threads": torch.get_num_threads(),
                         "summary": fitted_summary(fitted), "rows": fitted}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for n in COUNTS:
        print(f"N {n}: median " + ", ".join(f"{k} {summary[str(n)][k]['median']:.1f}" for k in KINDS))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
