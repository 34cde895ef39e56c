"""The study's figures: PSNR against time or iterations, speed-up against milestone, visual grids, N against
detail, the network's PPM over an image."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..study.analysis import iteration_speedups, mean, mean_gradient, median, psnr_at, run_of
from ..study.protocol import INITS
from .fitting import log_axis, to_numpy_image

COLORS = {"net": "tab:red", "quadtree": "tab:green", "random": "tab:blue"}


def plot_psnr_vs_time(studies: list[dict], ax=None, key: str = "seconds"):
    """Mean PSNR over images against time (log axis, init included), or against iterations with
    ``key="iteration"``, one line per start, over the span every image's run covers."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    lo_floor = 1e-2 if key == "seconds" else 1
    for kind in INITS:
        runs = [r for s in studies for r in s["runs"] if r["init"] == kind]
        if not runs:
            continue
        # from where every image's run has started to where every one has ended: the mean is always over all
        start = max(max(r[key][0], lo_floor) for r in runs)
        end = min(r[key][-1] for r in runs)
        if end <= start:
            continue
        grid = [start * (end / start) ** (k / 199) for k in range(200)]
        values = [mean([psnr_at(r, t, key) for r in runs]) for t in grid]
        ax.plot(grid, values, color=COLORS[kind], label=f"{kind} (mean N {mean([r['n'] for r in runs]):,.0f})")
    log_axis(ax)
    ax.set_xlabel("time (s, init included)" if key == "seconds" else "iterations")
    ax.set_ylabel(f"mean PSNR over {len(studies)} images (dB)")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no line when the runs share no span (one image, a start cut short)
        ax.legend()
    return ax.figure


def plot_speedup_vs_milestone(studies: list[dict], ax=None):
    """Median (and range over images) of the iteration speed-up over random, against random's iteration count."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for fast in ("net", "quadtree"):
        table = iteration_speedups(studies, fast, "random")
        if not table:
            continue
        marks = sorted(table)
        mid = [median([r["speedup"] for r in table[m]]) for m in marks]
        lo = [min(r["speedup"] for r in table[m]) for m in marks]
        hi = [max(r["speedup"] for r in table[m]) for m in marks]
        ax.plot(marks, mid, "o-", color=COLORS[fast], label=f"{fast} over random (median)")
        ax.fill_between(marks, lo, hi, color=COLORS[fast], alpha=0.15)
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("iterations of the random start (milestone)")
    ax.set_ylabel("iteration speed-up (milestone / iterations needed)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax.figure


def plot_visual_grid(out: Path, studies: list[dict], images: list[Path], names: list[str],
                     inits=("net", "random"), crop: int = 128):
    """GT | init | two short budgets | the longest, for each start on each named image, zoomed crops below."""
    import matplotlib.pyplot as plt

    from ..gaussians import Gaussians2D
    from ..io import load_image
    from ..render import render

    by_name = {Path(p).stem: p for p in images}
    rows = [(name, kind) for name in names for kind in inits]
    all_budgets = sorted({sn["budget"] for s in studies for r in s["runs"] for sn in r["snapshots"]})
    budgets = ["init"] + sorted(set(all_budgets[:2] + all_budgets[-1:]))
    cols = len(budgets) + 1
    fig, axes = plt.subplots(2 * len(rows), cols, figsize=(2.4 * cols, 2 * 2.4 * len(rows) * 0.75),
                             layout="constrained", squeeze=False)
    for row, (name, kind) in enumerate(rows):
        target = load_image(by_name[name])
        _, height, width = target.shape
        crop = min(crop, height, width)
        y0, x0 = (height - crop) // 2, (width - crop) // 2
        panels = [("ground truth", target)]
        for b in budgets:
            label = "init" if b == "init" else f"{b:g}s"
            path = out / "gaussians" / f"{name}_{kind}_{label}.safetensors"
            if not path.exists():  # a budget the init alone exceeded has no snapshot
                continue
            with torch.no_grad():
                img = render(Gaussians2D.load(path), height, width).clamp(0, 1)
            panels.append((f"{kind} {label}: {-10 * math.log10(torch.mean((img - target) ** 2).item()):.1f} dB", img))
        for col in range(cols):
            top, bottom = axes[2 * row, col], axes[2 * row + 1, col]
            for a in (top, bottom):
                a.axis("off")
            if col >= len(panels):
                continue
            title, img = panels[col]
            top.imshow(to_numpy_image(img))
            top.add_patch(plt.Rectangle((x0, y0), crop, crop, fill=False, color="yellow", lw=1))
            top.set_title(title if col else f"{name}", fontsize=8)
            bottom.imshow(to_numpy_image(img[:, y0:y0 + crop, x0:x0 + crop]), interpolation="nearest")
    return fig


def plot_ppm_overlay(out: Path, images: list[Path], names: list[str], generator=None, crop: int = 64):
    """Per named image: the image, the network's PPM, its init Gaussians (1 std) over a zoomed crop, their render.

    The Gaussians are the study's saved ``net`` inits (``out/gaussians/<name>_net_init.safetensors``); the PPM is
    recomputed with ``generator`` (default: the shipped one), which must be the one the study ran with.
    """
    import matplotlib.pyplot as plt

    from ..gaussians import Gaussians2D
    from ..io import load_image
    from ..render import render
    from .placement import plot_ellipses

    if generator is None:
        from ..generator import Generator

        generator = Generator.from_pretrained()
    by_name = {Path(p).stem: p for p in images}
    fig, axes = plt.subplots(len(names), 4, figsize=(4 * 2.8, len(names) * 2.8 * 0.72), layout="constrained",
                             squeeze=False)
    for row, name in enumerate(names):
        target = load_image(by_name[name])
        _, height, width = target.shape
        g = Gaussians2D.load(out / "gaussians" / f"{name}_net_init.safetensors")
        crop = min(crop, height, width)
        y0, x0 = (height - crop) // 2, (width - crop) // 2
        box = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        inside = ((g.means[:, 0] >= x0 - 8) & (g.means[:, 0] < x0 + crop + 8)
                  & (g.means[:, 1] >= y0 - 8) & (g.means[:, 1] < y0 + crop + 8))
        local = g[inside].to_cholesky()
        local = Gaussians2D.from_cholesky(local.means - torch.tensor([x0, y0]), local.cholesky, local.colors,
                                          local.opacities, size=(crop, crop))
        with torch.no_grad():
            picture = render(g, height, width).clamp(0, 1)
        ax = axes[row]
        ax[0].imshow(to_numpy_image(target))
        ax[0].add_patch(plt.Rectangle((x0, y0), crop, crop, fill=False, color="yellow", lw=1))
        ax[0].set_title(name, fontsize=8)
        ax[1].imshow(generator.ppm(target).cpu().numpy(), cmap="magma", vmin=0, vmax=1)
        ax[1].set_title("network PPM", fontsize=8)
        plot_ellipses(target[:, box[0], box[1]], local, ax=ax[2], linewidth=0.5,
                      title=f"init Gaussians in the crop (1 std; {len(g):,} in all)")
        ax[2].title.set_fontsize(8)
        ax[3].imshow(to_numpy_image(picture[:, box[0], box[1]]), interpolation="nearest")
        ax[3].set_title(f"their render, crop ({-10 * math.log10(torch.mean((picture - target) ** 2).item()):.1f} dB "
                        "whole image)", fontsize=8)
        for a in ax:
            a.axis("off")
    return fig


def plot_n_vs_detail(studies: list[dict], images: list[Path], kind: str = "net"):
    """N chosen by a start against the image's mean gradient magnitude, one point per image."""
    import matplotlib.pyplot as plt

    from ..io import load_image

    by_name = {Path(p).name: p for p in images}
    xs, ys, labels = [], [], []
    for study in studies:
        run = run_of(study, kind)
        if run is None or study["image"] not in by_name:
            continue
        xs.append(mean_gradient(load_image(by_name[study["image"]])))
        ys.append(run["n"])
        labels.append(Path(study["image"]).stem.replace("kodim", ""))
    fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
    ax.scatter(xs, ys, color=COLORS.get(kind, "k"))
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("mean gradient magnitude (image detail)")
    ax.set_ylabel(f"N ({kind} start)")
    ax.grid(True, alpha=0.3)
    return fig
