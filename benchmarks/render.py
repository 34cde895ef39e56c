"""Dense reference vs the sparse PyTorch backend: forward and forward+backward time, peak memory.

    python benchmarks/render.py [--repeats 5] [--out figures/render.json]

Each (case, backend) runs in a fresh subprocess so that its peak resident memory (ru_maxrss, minus the
process's size before rendering) is its own. Times are medians over ``--repeats`` runs after a warm-up.
The dense backend refuses the Kodak-size case (15.7 G evaluations), which is the point of the sparse one.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path

from rasterizer import realistic_gaussians  # one definition for every benchmark (benchmarks/ is on sys.path)

CASES = {  # name: (height, width, number of Gaussians)
    "256x256, 2k": (256, 256, 2_000),
    "768x512, 40k": (512, 768, 40_000),
}


def measure(case, backend, repeats, queue):
    import torch

    import gilab

    height, width, n = CASES[case]
    g = realistic_gaussians(n, height, width)
    leaves = [t.requires_grad_() for t in (g.means, g.scales, g.rotations, g.colors)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def forward():
        with torch.no_grad():
            return gilab.render(g, height, width, backend=backend)

    def forward_backward():
        gilab.render(g, height, width, backend=backend).square().mean().backward()
        for t in leaves:
            t.grad = None

    try:
        forward()
        result = {"forward_ms": _median_ms(forward, repeats), "forward_backward_ms": _median_ms(forward_backward,
                                                                                                 repeats)}
    except MemoryError as exc:
        result = {"refused": str(exc).split(";")[0]}
    result["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    queue.put(result)


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def run_isolated(case, backend, repeats):
    import os

    # Let the dense reference take the 256x256 case (131 M evaluations, a few GB); it still refuses Kodak size.
    os.environ["GILAB_DENSE_MAX_EVALUATIONS"] = str(2**28)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(case, backend, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "figures" / "render.json")
    args = parser.parse_args()
    import torch

    rows = []
    print(f"{'case':<14} {'backend':<7} {'forward ms':>11} {'fwd+bwd ms':>11} {'peak MB':>9}")
    for case in CASES:
        for backend in ["dense", "torch"]:
            r = {"case": case, "backend": backend, **run_isolated(case, backend, args.repeats)}
            rows.append(r)
            if "refused" in r:
                print(f"{case:<14} {backend:<7} {'refused: ' + r['refused'][:60]}")
            else:
                print(f"{case:<14} {backend:<7} {r['forward_ms']:>11.1f} {r['forward_backward_ms']:>11.1f} "
                      f"{r['peak_mb']:>9.0f}")
    from gilab.machine import cpu_name  # here, not at the top: gilab loads numba and torch
    meta = {"machine": cpu_name(), "cores": torch.get_num_threads(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
