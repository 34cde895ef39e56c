"""Rasterizer backends head to head: forward and forward+backward time, throughput, peak memory, compile time.

    python benchmarks/rasterizer.py            # full run (minutes; the torch backend is slow at 200k Gaussians)
    python benchmarks/rasterizer.py --quick    # two small cases, fewer repeats -> figures/rasterizer_quick.*
    python benchmarks/rasterizer.py --cuda-only  # the CUDA rows alone -> figures/rasterizer_cuda.* (make gpu-check)

Backends: ``torch`` (sparse PyTorch) and ``cpu`` (numba) on the CPU, sum blending (GaussianImage's model, what
fits use), plus ``cpu`` in alpha blending; with CUDA also ``torch`` and ``triton`` on CUDA (sum) and ``gsplat``
(alpha).
gilab makes idle OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, set on import unless the user set
it); the ", spin" rows repeat ``torch`` and ``cpu`` with OMP_WAIT_POLICY=active (see SPIN): on a machine shared
with other busy processes, spin-waiting can cost more than a small render. Speed-ups compare rows with the same
setting.
Cases: 256x256 / 2,000 Gaussians, Kodak 768x512 / 40,000 and 2040x1356 / 200,000 (DIV2K size), with realistic
sizes (scales 0.5-4 px, 1 % six times larger); and the Kodak case with every scale x3 (9x the evaluations, cpu
only) to show that time follows the evaluations and memory does not.

Columns:
- ``fwd ms``, ``fwd+bwd ms``: best of the repeats (the machine may be shared; the JSON keeps every run).
- ``x torch``: speed-up over the ``torch`` backend on the same device, case, blend and OpenMP setting.
- ``Geval/s``: pixel-Gaussian pairs inside the cutoff (the work any exact renderer must do), per second;
  forward+backward counts each pair twice (both passes evaluate it).
- ``peak MB``: resident memory the render adds at its peak (CPU: /proc VmHWM after resetting it, in a fresh
  subprocess per row; CUDA: torch.cuda.max_memory_allocated).
- ``first s``: the first call in a fresh process (for ``cpu``: loading the kernels from numba's disk cache).
  The cold compile (empty cache) is measured once, separately, and printed above the table.
- ``% peak``: useful fp32 flops (FLOPS_FORWARD / FLOPS_BACKWARD per evaluation, counted from the kernels'
  source) over the machine's fp32 peak, estimated from the CPU flags (see :func:`fp32_peak_gflops`).
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

CASES = {  # name: (height, width, number of Gaussians, scale factor)
    "256x256, 2k": (256, 256, 2_000, 1.0),
    "768x512, 40k": (512, 768, 40_000, 1.0),
    "2040x1356, 200k": (1356, 2040, 200_000, 1.0),
    "768x512, 40k, 3x sizes": (512, 768, 40_000, 3.0),
}
QUICK_CASES = ["256x256, 2k", "768x512, 40k"]
#: fp32 operations per pixel-Gaussian evaluation in the cpu kernels (an FMA counts 2, a compare or select 1):
#: forward ~ offset 2 + sigma 7 + exp 24 + opacity, cutoff, clamp 4 + three colour updates 6;
#: backward ~ the same 33 to v + dL/dv 6 + dL/dsigma 2 + nine accumulations 19.
FLOPS_FORWARD = 40
FLOPS_BACKWARD = 60


# ----------------------------------------------------------------------------------------------- machine
def fp32_peak_gflops() -> tuple[float, str]:
    """The CPU's fp32 peak, GFLOP/s, and how it was estimated.

    cores x clock x FMA lanes x 2 flops per FMA x FMA units per core. Lanes from the widest vector extension
    in /proc/cpuinfo flags (avx512f 16, avx2+fma 8, else 4 without FMA); 2 FMA units per core (most x86 server
    and desktop cores since Haswell; Zen 4 reaches the same 32 fp32 FMAs per cycle with 2 x 256-bit pipes).
    Clock: the base frequency reported by /proc/cpuinfo (turbo would raise the peak). On this project's
    2-core Sapphire Rapids VM: 2 x 2.3 GHz x 16 x 2 x 2 = 294 GFLOP/s (a single-thread float32 matmul in
    torch measured 152 GFLOP/s per core, which agrees).
    """
    flags, mhz = set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    cores = os.cpu_count() or 1
    if "avx512f" in flags:
        lanes, fma, ext = 16, 2, "AVX-512"
    elif "avx2" in flags and "fma" in flags:
        lanes, fma, ext = 8, 2, "AVX2+FMA"
    else:
        lanes, fma, ext = 4, 1, "SSE (no FMA)"
    ghz = (mhz or 2000.0) / 1000
    peak = cores * ghz * lanes * 2 * fma
    return peak, f"{cores} cores x {ghz:.2f} GHz x {lanes} fp32 lanes ({ext}) x 2 flop/FMA x {fma} FMA units"


# ------------------------------------------------------------------------------------------------ worker
def realistic_gaussians(n, height, width, scale=1.0, seed=0):
    """Means uniform over the image, scales 0.5-4 px with 1 % six times larger (times ``scale``), any angle,
    colours in [0, 0.25), opacity 1 (GaussianImage)."""
    import torch

    from gilab import Gaussians2D

    gen = torch.Generator().manual_seed(seed)
    scales = 0.5 + 3.5 * torch.rand(n, 2, generator=gen)
    scales[torch.rand(n, generator=gen) < 0.01] *= 6
    means = torch.rand(n, 2, generator=gen) * torch.tensor([width, height])
    rotations = torch.rand(n, generator=gen) * 3.14159
    return Gaussians2D.from_scale_rotation(means, scales * scale, rotations, torch.rand(n, 3, generator=gen) / 4)


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> bool:
    """Make VmHWM (peak resident memory) equal the current RSS, so the next peak is the render's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(case: str, backend: str, device: str, blend: str, repeats: int, budget_s: float) -> dict:
    """One (case, backend) row, run in a fresh process."""
    import torch

    from gilab.render import backend_module

    height, width, n, scale = CASES[case]
    g = realistic_gaussians(n, height, width, scale).to(device)
    leaves = [t.detach().clone().requires_grad_() for t in (g.means, g.conics(), g.colors, g.opacities)]
    grad_image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(1)).to(device)
    module = backend_module(backend)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        image = module.rasterize(*leaves, height, width, blend=blend)
        sync()
        return image

    def forward_backward():
        forward().backward(grad_image)
        sync()
        for t in leaves:
            t.grad = None

    # torch imports sympy and more on the first backward with an explicit gradient (~0.3 s): not ours to time.
    warm = torch.ones(2, requires_grad=True)
    (warm * 2).backward(torch.ones(2))
    # First call: on a tiny problem, so it measures compiling / loading kernels, not rendering.
    tiny = [t.detach()[:10].clone() for t in leaves]
    tiny[0] = tiny[0] % 16  # inside the 16 x 16 canvas, so that the tiny render depends on its inputs
    tiny = [t.requires_grad_() for t in tiny]
    start = time.perf_counter()
    module.rasterize(*tiny, 16, 16, blend=blend).backward(torch.ones(3, 16, 16, device=device))
    sync()
    first_s = time.perf_counter() - start

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        exact = _reset_peak_rss()
        base = _rss_mb("VmRSS")
    result = {"first_s": first_s}
    for name, fn in [("forward_ms", forward), ("forward_backward_ms", forward_backward)]:
        times, cpu_times, spent = [], [], time.perf_counter()
        while len(times) < repeats and (not times or time.perf_counter() - spent < budget_s):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
            cpu_times.append(1e3 * (time.process_time() - c0))
        result[name] = min(times)
        result[name + "_all"] = times
        result[name + "_cpu_all"] = cpu_times  # CPU time of all threads: less sensitive to a busy machine
    if device == "cuda":
        result["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        result["peak_mb"] = _rss_mb("VmHWM") - base if exact else float("nan")
    if backend == "cpu":
        import numba

        result["evaluations"] = _count_evaluations(leaves, height, width)
        result["threading_layer"] = numba.threading_layer()
    result["threads"] = torch.get_num_threads()
    return result


def _count_evaluations(leaves, height, width) -> int:
    from gilab.render.cpu import evaluations

    means, conics, _, opacities = leaves
    return evaluations(means, conics, opacities, height, width)


def cold_compile_seconds() -> dict:
    """First cpu call (float32, sum and alpha, forward+backward) with an empty numba cache: the real compile."""
    code = ("import json, time, torch; from gilab.render import cpu; "
            "x = lambda *s: torch.rand(*s, requires_grad=True); out = {}\n"
            "for blend in ['sum', 'alpha']:\n"
            "    t = time.perf_counter()\n"
            "    q = torch.tensor([[1.0, 0.0, 1.0]]).repeat(4, 1).requires_grad_()\n"
            "    cpu.rasterize(x(4, 2) * 8, q, x(4, 3), x(4), 8, 8, blend=blend).sum().backward()\n"
            "    out[blend] = time.perf_counter() - t\n"
            "print(json.dumps(out))")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        text = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(text.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ parent
def run_row(case, backend, device, blend, repeats, budget_s, env=None) -> dict:
    spec = json.dumps([case, backend, device, blend, repeats, budget_s])
    proc = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True, check=False,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: The default rows run with gilab's setting, passive OpenMP waiting; the ", spin" rows with libgomp's spin-waiting
#: (numba's OpenMP layer runs on torch's libgomp), which can cost more than a small render on a machine shared
#: with other busy processes. Set before torch starts, so per process.
DEFAULT = {"OMP_WAIT_POLICY": "passive"}
SPIN = {"OMP_WAIT_POLICY": "active"}


def rows_to_run(cases, cuda: bool, cpu: bool = True):
    """(case, backend, device, blend, extra environment) for every row of the table."""
    for case in cases:
        big_footprints = CASES[case][3] != 1.0
        for env in (DEFAULT, SPIN) if cpu else ():
            if not big_footprints:
                yield case, "torch", "cpu", "sum", env
            yield case, "cpu", "cpu", "sum", env
        if cpu:
            yield case, "cpu", "cpu", "alpha", None
        if cuda:
            yield case, "torch", "cuda", "sum", None
            yield case, "triton", "cuda", "sum", None
            yield case, "gsplat", "cuda", "alpha", None


def fill_derived(rows, peak_gflops):
    """Speed-ups over torch, evaluations per second and the share of the fp32 peak."""
    evaluations = {r["case"]: r["evaluations"] for r in rows if "evaluations" in r}
    for r in rows:
        if "error" in r:
            continue
        ev = evaluations.get(r["case"])
        r["evaluations"] = ev
        ref = next((x for x in rows if x["case"] == r["case"] and x["backend"] == "torch" and x["env"] == r["env"]
                    and x["device"] == r["device"] and x["blend"] == r["blend"] and "error" not in x), None)
        for key in ["forward_ms", "forward_backward_ms"]:
            r[key.replace("_ms", "_speedup")] = ref[key] / r[key] if ref else None
        if ev:
            r["forward_geval_s"] = ev / r["forward_ms"] / 1e6
            r["forward_backward_geval_s"] = 2 * ev / r["forward_backward_ms"] / 1e6
            if r["device"] == "cpu":
                r["forward_peak_share"] = ev * FLOPS_FORWARD / (r["forward_ms"] * 1e6) / peak_gflops
                r["forward_backward_peak_share"] = (ev * (FLOPS_FORWARD + FLOPS_BACKWARD)
                                                    / (r["forward_backward_ms"] * 1e6) / peak_gflops)


def print_table(rows):
    head = (f"{'case':<23} {'backend':<18} {'blend':<5} {'fwd ms':>9} {'fwd+bwd ms':>10} {'x torch':>13} "
            f"{'Geval/s':>11} {'peak MB':>8} {'first s':>7} {'% peak':>11}")
    print(head)
    print("-" * len(head))
    fmt = lambda v, f: "-" if v is None else format(v, f)
    for r in rows:
        name = _label(r)
        if "error" in r:
            print(f"{r['case']:<23} {name:<18} {r['blend']:<5} error: {r['error'][:80]}")
            continue
        speedup = f"{fmt(r['forward_speedup'], '.1f')}/{fmt(r['forward_backward_speedup'], '.1f')}"
        geval = f"{fmt(r.get('forward_geval_s'), '.2f')}/{fmt(r.get('forward_backward_geval_s'), '.2f')}"
        share = (f"{fmt(_pct(r.get('forward_peak_share')), '.0f')}/"
                 f"{fmt(_pct(r.get('forward_backward_peak_share')), '.0f')}")
        print(f"{r['case']:<23} {name:<18} {r['blend']:<5} {r['forward_ms']:>9.1f} {r['forward_backward_ms']:>10.1f} "
              f"{speedup:>13} {geval:>11} {r['peak_mb']:>8.0f} {r['first_s']:>7.2f} {share:>11}")
    print("(x torch, Geval/s and % peak: forward / forward+backward)")


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _label(r) -> str:
    return r["backend"] + (" (cuda)" if r["device"] == "cuda" else "") + (", spin" if r.get("env") == SPIN else "")


def _pct(x):
    return None if x is None else 100 * x


def plot(rows, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    cases = list(dict.fromkeys(r["case"] for r in ok))
    labels = list(dict.fromkeys(f"{_label(r)} {r['blend']}" for r in ok))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    width = 0.8 / max(1, len(labels))
    for ax, key, title in [(axes[0], "forward_ms", "forward"), (axes[1], "forward_backward_ms", "forward + backward")]:
        for k, label in enumerate(labels):
            xs, ys = [], []
            for c, case in enumerate(cases):
                r = next((r for r in ok if r["case"] == case and f"{_label(r)} {r['blend']}" == label), None)
                if r:
                    xs.append(c + (k - (len(labels) - 1) / 2) * width)
                    ys.append(r[key])
            ax.bar(xs, ys, width, label=label)
        ax.set_yscale("log")
        ax.set_xticks(range(len(cases)), cases, rotation=15)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("milliseconds (log scale, lower is better)")
    axes[1].legend(fontsize=8)
    fig.suptitle("gilab rasterizer backends")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two small cases, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="runs per timing (default 5, quick 3)")
    parser.add_argument("--cuda-only", action="store_true", help="only the CUDA rows (torch, triton, gsplat)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (PNG beside it)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return

    import numba
    import torch

    repeats = args.repeats or (3 if args.quick else 5)
    budget_s = 2.0 if args.quick else 10.0  # stop repeating a slow row once this much time has gone into it
    name = "rasterizer_cuda" if args.cuda_only else "rasterizer"
    out = args.out or ROOT / "figures" / (f"{name}_quick.json" if args.quick else f"{name}.json")
    cuda = torch.cuda.is_available()
    if args.cuda_only and not cuda:
        print("rasterizer.py --cuda-only: needs CUDA (torch.cuda.is_available() is False)", file=sys.stderr)
        sys.exit(2)
    peak, peak_how = fp32_peak_gflops()
    from gilab.machine import cpu_name  # here, not at the top: gilab loads numba and torch
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; fp32 peak ~{peak:.0f} GFLOP/s ({peak_how})")
    print(f"numba {numba.__version__}, torch {torch.__version__}, CUDA: {cuda}")
    compile_s = {} if args.cuda_only else cold_compile_seconds()
    if compile_s:
        print("cold compile of the cpu kernels (empty numba cache, float32, forward+backward): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items()))

    rows = []
    for case, backend, device, blend, env in rows_to_run(QUICK_CASES if args.quick else CASES, cuda,
                                                         cpu=not args.cuda_only):
        r = {"case": case, "backend": backend, "device": device, "blend": blend, "env": env or {},
             **run_row(case, backend, device, blend, repeats, budget_s, env)}
        rows.append(r)
        print(f"  {case:<23} {_label(r):<18} {blend:<5} "
              + (r["error"] if "error" in r else f"fwd {r['forward_ms']:.1f} ms, fwd+bwd {r['forward_backward_ms']:.1f} ms"),
              flush=True)
    fill_derived(rows, peak)
    print()
    print_table(rows)
    meta = {"machine": cpu_name(), "cores": os.cpu_count(), "fp32_peak_gflops": peak,
            "fp32_peak_estimate": peak_how, "numba": numba.__version__, "torch": torch.__version__,
            "numba_threading_layer": next((r["threading_layer"] for r in rows if "threading_layer" in r), None),
            "cuda": cuda, "cuda_device": torch.cuda.get_device_name() if cuda else None,
            "torch_cuda": torch.version.cuda, "triton": _version("triton"), "date": time.strftime("%Y-%m-%d %H:%M"),
            "repeats": repeats, "quick": args.quick, "cold_compile_s": compile_s,
            "flops_per_evaluation": {"forward": FLOPS_FORWARD, "backward": FLOPS_BACKWARD},
            "load_average_at_end": os.getloadavg()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
