"""How evenly the `cpu` kernels' threads share the work: contiguous runs against interleaved bands.

    GILAB_DATA=/work/shared/data python benchmarks/thread_balance.py [--threads 2] [--out figures/thread_balance.json]

numba splits a ``prange`` into one contiguous run of iterations per thread. The forward renders bands of 16 rows
and the backward chunks of Gaussians in band order, so a run is a region of the picture, and an image with sky
at the top gives one thread much less to do. Since 2026-12-02 the kernels interleave instead (``spread`` in
``gilab/render/_cpu_kernels.py``: thread t takes bands t, t + T, ...). This script counts each thread's work both
ways on the network's start of every Kodak image (its own N), without timing anything: work = 16-pixel groups
the kernels evaluate (``ceil(span / 16)`` per covered row, what both passes loop over). A step of the fit waits
for its busiest thread, so the share of the busiest one bounds the speed: 0.5 is perfect for 2 threads, and
going from a share s to 0.5 makes that pass s / 0.5 times faster when nothing else limits it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

CHUNKS_PER_THREAD = 32  # as gilab.fused and gilab.render.cpu cut the backward's Gaussians


def lane_groups(g, height: int, width: int):
    """Per band and per Gaussian: the 16-pixel groups the kernels evaluate; and the backward's band order."""
    import numpy as np

    from gilab.render import _cpu_kernels as k

    means = g.means.detach().float().numpy().copy()
    conics = g.conics().detach().float().numpy().copy()
    opacities = g.opacities.detach().float().numpy().copy()
    level2, rows, band_start, _, order = k.plan(means, conics, opacities, height, np.finfo(np.float32).eps)
    per_band, per_gaussian = np.zeros(len(band_start) - 1), np.zeros(len(opacities))
    spans = np.empty((height, 2), np.int32)
    for i in range(len(opacities)):
        first, last = rows[i]
        if first > last:
            continue
        k.row_spans(float(means[i, 0]), float(means[i, 1]), float(conics[i, 0]), float(conics[i, 1]),
                    float(conics[i, 2]), level2[i], first, last, width, spans)
        widths = spans[: last - first + 1, 1] - spans[: last - first + 1, 0] + 1
        groups = np.maximum(0, -(-widths // k.LANES))
        np.add.at(per_band, np.arange(first, last + 1) // k.BAND_ROWS, groups)
        per_gaussian[i] = groups.sum()
    return per_band, per_gaussian, order


def busiest_share(work, threads: int, interleaved: bool) -> float:
    """The largest thread's share of ``work`` (per item) under numba's static split, items in order or spread."""
    from gilab.render._cpu_kernels import spread

    n = len(work)
    q, r = divmod(n, threads)
    totals, k = [], 0
    for t in range(threads):  # numba's runs: q + 1 iterations for the first r threads, q for the others
        run = range(k, k + q + (t < r))
        totals.append(sum(work[spread(i, n, threads) if interleaved else i] for i in run))
        k = run.stop
    return max(totals) / max(sum(totals), 1e-30)


def image_balance(g, height: int, width: int, threads: int) -> dict:
    per_band, per_gaussian, order = lane_groups(g, height, width)
    n, n_chunks = len(order), min(len(order), CHUNKS_PER_THREAD * threads)
    chunks = [per_gaussian[order[c * n // n_chunks:(c + 1) * n // n_chunks]].sum() for c in range(n_chunks)]
    return {"n": len(g), "bands": len(per_band),
            "forward": {"runs": busiest_share(per_band, threads, False),
                        "interleaved": busiest_share(per_band, threads, True)},
            "backward": {"runs": busiest_share(chunks, threads, False),
                         "interleaved": busiest_share(chunks, threads, True)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="only the first K Kodak images")
    p.add_argument("--out", type=Path, default=Path("figures/thread_balance.json"))
    args = p.parse_args(argv)
    if args.threads < 2:
        print("--threads must be at least 2 (one thread has nothing to balance)", file=sys.stderr)
        return 2

    import torch

    from gilab.datasets import kodak
    from gilab.errors import DataError
    from gilab.generator import Generator
    from gilab.io import as_image
    from gilab.study.protocol import weights_fingerprint

    try:
        paths = kodak(download=False)[: args.limit]
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 2
    gen = Generator.from_pretrained().eval()
    rows = []
    for path in paths:
        image = as_image(path)
        with torch.no_grad():
            g = gen(image)
        row = {"image": Path(path).stem} | image_balance(g, *image.shape[-2:], args.threads)
        rows.append(row)
        print(f"{row['image']}: N {row['n']:,}, busiest thread forward {row['forward']['runs']:.3f} -> "
              f"{row['forward']['interleaved']:.3f}, backward {row['backward']['runs']:.3f} -> "
              f"{row['backward']['interleaved']:.3f}", flush=True)
    summary = {f"{part}_{way}_{stat}": fn(r[part][way] for r in rows)
               for part in ("forward", "backward") for way in ("runs", "interleaved")
               for stat, fn in (("mean", statistics.fmean), ("max", max))}
    out = {"benchmark": "the cpu kernels' busiest thread's share of the work, contiguous runs vs interleaved",
           "threads": args.threads, "start": "net, own N", "weights_sha256": weights_fingerprint(),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "summary": summary,
           "per_image": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(" ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
