"""Fitting on a GPU: gilab.fit's iterations per second on CUDA, and one full GaussianImage fit of a Kodak image.

    python benchmarks/fitting_gpu.py                          # -> figures/fitting_gpu.json (about 4 minutes)
    python benchmarks/fitting_gpu.py --full-seconds 120       # cap the full fit (it stops at 50,000 iterations first)

Three steps, each written to the JSON as soon as it is done (a run cut short keeps what it measured):

1. ``sweep``: the triton backend's launch settings (Gaussians per loop step x warps per program) for each kernel at
   Kodak size with 40,000 Gaussians, best of 20; the fastest are used for the rest of the run and recorded.
2. ``throughput``: iterations per second of ``gilab.fit`` (random start, Cholesky, Adan, backend ``auto``: triton)
   on the image at 40,000 and 70,000 Gaussians, over ``--throughput-iters`` iterations after a warm-up.
3. ``full_fit``: GaussianImage's Kodak run: 70,000 Gaussians, 50,000 iterations, random start, Cholesky, with its
   PSNR and time. If ``--full-seconds`` stops it first, the iterations done and the time 50,000 would take at that
   rate are recorded instead.

Reference (GaussianImage's paper and code, one GPU): 50,000 iterations at 70,000 Gaussians in about 107 s
(~470 iterations per second), 44.08 dB mean PSNR over the 24 Kodak images. Only runs on CUDA: exits 2 with one
line otherwise, or when the image is missing (``--image``, default ``$GILAB_DATA/kodak/kodim01.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"gaussianimage_seconds_50k_iters_70k": 107.0, "gaussianimage_iters_per_second": 470,
             "gaussianimage_kodak_mean_psnr_70k_db": 44.08}
#: (BLOCK, num_warps) per kernel: those that compile for sm_90 without spilling registers, around the defaults
SWEEP = {"forward": [(8, 4), (16, 4), (16, 8), (32, 8), (64, 8)],
         "backward": [(4, 4), (8, 4), (8, 8), (16, 8), (16, 16)]}


def main():
    args = parse_args()
    import torch

    if not torch.cuda.is_available():
        print("fitting_gpu.py: needs CUDA (torch.cuda.is_available() is False)", file=sys.stderr)
        sys.exit(2)
    if not args.image.exists():
        print(f"fitting_gpu.py: no image at {args.image} (give --image, or set GILAB_DATA)", file=sys.stderr)
        sys.exit(2)
    from gilab.io import load_image

    image = load_image(args.image).cuda()
    report = {"meta": meta(args, image), "reference": REFERENCE}
    if not args.no_sweep:
        report["sweep"], report["launch"] = sweep(image.shape[1], image.shape[2])
        write(args.out, report)
    report["throughput"] = [throughput(image, n, args.throughput_iters) for n in args.counts]
    write(args.out, report)
    report["full_fit"] = full_fit(image, args.full_n, args.full_iters, args.full_seconds)
    report["meta"]["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    write(args.out, report)
    print(f"wrote {args.out}")


def parse_args():
    data = os.environ.get("GILAB_DATA", "").strip()
    default_image = Path(data, "kodak", "kodim01.png") if data else ROOT / "data" / "kodak" / "kodim01.png"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=default_image, help="a Kodak image (default kodim01)")
    parser.add_argument("--counts", type=int, nargs="+", default=[40_000, 70_000], help="N for the throughput")
    parser.add_argument("--throughput-iters", type=int, default=500, help="iterations timed per N")
    parser.add_argument("--full-n", type=int, default=70_000)
    parser.add_argument("--full-iters", type=int, default=50_000)
    parser.add_argument("--full-seconds", type=float, default=180.0, help="cap on the full fit, seconds")
    parser.add_argument("--no-sweep", action="store_true", help="keep the triton backend's default launch")
    parser.add_argument("--out", type=Path, default=ROOT / "figures" / "fitting_gpu.json")
    return parser.parse_args()


def meta(args, image) -> dict:
    import importlib.metadata

    import torch

    from gilab.render import available_backends

    try:  # a copy of the tree without .git, or no git: no revision
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                             check=False).stdout.strip() or None
    except OSError:
        rev = None
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": importlib.metadata.version("triton"), "gilab_revision": rev,
            "image": args.image.name, "size": list(image.shape[1:]), "date": time.strftime("%Y-%m-%d %H:%M"),
            "backends": {k: v[1] for k, v in available_backends().items()}}


def sweep(height: int, width: int) -> tuple[list[dict], dict]:
    """The triton backend's launch settings, best of 20 runs each at this size with 40,000 realistic Gaussians:
    the forward kernel's timed alone, then the backward kernel's with the forward (using the best forward).
    Leaves the fastest of each in place and returns (rows, the settings kept)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rasterizer import realistic_gaussians

    from gilab.render import triton as backend

    g = realistic_gaussians(40_000, height, width).to("cuda")
    leaves = [t.detach().clone().requires_grad_() for t in (g.means, g.conics(), g.colors, g.opacities)]
    grad = torch.rand(3, height, width, device="cuda")
    steps = {"forward": lambda: backend.rasterize(*leaves, height, width),
             "backward": lambda: backend.rasterize(*leaves, height, width).backward(grad)}
    rows, launch = [], backend.LAUNCH["compiled"]
    for kernel, settings in SWEEP.items():
        for block, warps in settings:
            launch[kernel] = {"BLOCK": block, "num_warps": warps}
            times = []
            for _ in range(23):  # the first three compile and warm up
                torch.cuda.synchronize()
                start = time.perf_counter()
                steps[kernel]()
                torch.cuda.synchronize()
                times.append(1e3 * (time.perf_counter() - start))
            rows.append({"kernel": kernel, "BLOCK": block, "num_warps": warps, "ms": min(times[3:]),
                         "timed": "forward" if kernel == "forward" else "forward + backward"})
            print(f"sweep: {kernel:<8} BLOCK {block:>2}, {warps:>2} warps: {rows[-1]['ms']:.2f} ms", flush=True)
        best = min((r for r in rows if r["kernel"] == kernel), key=lambda r: r["ms"])
        launch[kernel] = {"BLOCK": best["BLOCK"], "num_warps": best["num_warps"]}
    return rows, {k: dict(v) for k, v in launch.items()}


def throughput(image, n: int, iters: int) -> dict:
    """gilab.fit's iterations per second at n Gaussians (after a short warm-up fit: compiles, allocator)."""
    import gilab

    gilab.fit(image, n=n, iters=20, progress=False)
    result = gilab.fit(image, n=n, iters=iters, progress=False)
    row = {"n": n, "iterations": result.iterations, "iterations_per_second": result.iterations_per_second,
           "seconds": result.seconds, "backend": result.backend}
    print(f"throughput: {n:,} Gaussians: {row['iterations_per_second']:.0f} it/s on {result.backend}", flush=True)
    return row


def full_fit(image, n: int, iters: int, cap_s: float) -> dict:
    import gilab

    result = gilab.fit(image, n=n, iters=iters, seconds=cap_s, param="cholesky", seed=0, progress=False)
    rate = result.iterations_per_second
    row = {"n": n, "iterations_asked": iters, "iterations": result.iterations, "seconds": result.seconds,
           "init_seconds": result.init_seconds, "iterations_per_second": rate, "psnr_db": result.psnr,
           "finished": result.iterations >= iters, "backend": result.backend,
           "seconds_for_all_iterations": result.init_seconds + iters / rate if rate > 0 else None}
    print(f"full fit: {result.iterations:,}/{iters:,} iterations in {result.seconds:.1f} s, PSNR {result.psnr:.2f} dB"
          + ("" if row["finished"] else f" (capped; all would take {row['seconds_for_all_iterations']:.0f} s)"),
          flush=True)
    return row


def write(path: Path, report: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
