"""The study's report: Markdown tables and the figures, written from the per-image results on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import GilabError
from ..files import write_atomic
from .analysis import GAUSSIANIMAGE_KODAK, REFERENCE, iteration_speedups, load_runs, mean, median, speedups
from .protocol import INITS


def quality_table(studies: list[dict]) -> str:
    """Markdown: per start, mean N, init time and PSNR, then PSNR / MS-SSIM at every budget (means over the images
    that have a snapshot there: a start whose init exceeded a budget has none)."""
    inits = [k for k in INITS if any(r["init"] == k for s in studies for r in s["runs"])]
    budgets = sorted({snap["budget"] for s in studies for r in s["runs"] for snap in r["snapshots"]})
    head = "| start | mean N | init s | init PSNR | " + " | ".join(f"{b:g} s" for b in budgets) + " |"
    rows = [head, "|" + " --- |" * (4 + len(budgets))]
    for kind in inits:
        runs = [r for s in studies for r in s["runs"] if r["init"] == kind]
        cells = []
        for b in budgets:
            snaps = [sn for r in runs for sn in r["snapshots"] if sn["budget"] == b]
            missing = f" ({len(runs) - len(snaps)} none)" if len(snaps) < len(runs) else ""
            cells.append(f"{mean([sn['psnr'] for sn in snaps]):.2f} / {mean([sn['ms_ssim'] for sn in snaps]):.4f}"
                         + missing)
        rows.append(f"| {kind} | {mean([r['n'] for r in runs]):,.0f} | {mean([r['init_seconds'] for r in runs]):.2f} "
                    f"| {mean([r['init_psnr'] for r in runs]):.2f} | " + " | ".join(cells) + " |")
    return ("\n".join(rows) + "\n\nCells: PSNR (dB) / MS-SSIM, mean over images, time includes the init; "
            "\"(k none)\": k images whose init alone took longer than the budget.\n")


def speedup_table(studies: list[dict], fast: str = "net", slow: str = "random") -> str:
    """Markdown: for each budget B of ``fast``, the median and range over images of (time ``slow`` needs) / B."""
    rows = [f"| {fast} budget B | median speed-up | range | images where {slow} never caught up |",
            "| --- | --- | --- | --- |"]
    for budget, values in sorted(speedups(studies, fast, slow).items()):
        ratios = [v for v, _ in values]
        bounds = sum(1 for _, bound in values if bound)
        mid = median(ratios)
        # a median that falls on a lower bound is itself only a lower bound
        mid_is_bound = sum(1 for v, bound in values if bound and v <= mid) > 0 and bounds * 2 >= len(values)
        rows.append(f"| {budget:g} s | {'> ' if mid_is_bound else ''}{mid:.1f}x | {min(ratios):.1f}x - "
                    f"{max(ratios):.1f}x | {bounds} of {len(values)} |")
    return "\n".join(rows) + "\n"


def convergence_table(studies: list[dict]) -> str:
    """Markdown (iteration mode): per milestone m of the random start, its mean PSNR, and for net and quad-tree
    the median (range) of m / the steps they need to reach it, the same in seconds (init included), and on how
    many images they are ahead of random at step m."""
    tables = {fast: iteration_speedups(studies, fast, "random") for fast in ("net", "quadtree")}
    marks = sorted(set().union(*[set(t) for t in tables.values()]))
    rows = [("| random at step m | its mean PSNR | net: iteration speed-up | net: seconds | net ahead at m | "
             "quad-tree: iteration speed-up | quad-tree: seconds | quad-tree ahead at m |"),
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in marks:
        cells = []
        target = None
        for fast in ("net", "quadtree"):
            entries = tables[fast].get(m, [])
            if not entries:
                cells += ["", "", ""]
                continue
            target = mean([e["target"] for e in entries])
            ratios = [e["speedup"] for e in entries]
            bounds = sum(e["bound"] for e in entries)
            note = f", {bounds} never reached" if bounds else ""
            cells += [f"{median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f}x{note})",
                      f"{median([e['seconds_speedup'] for e in entries]):.1f}x",
                      f"{sum(e['ahead'] for e in entries)} of {len(entries)}"]
        rows.append(f"| {m:,} | {target:.2f} | " + " | ".join(cells) + " |")
    ref = GAUSSIANIMAGE_KODAK
    return ("\n".join(rows) + f"\n\nSpeed-up: m / the steps the start needs to reach random's PSNR at step m (exact "
            "to the log spacing of the logged curve); seconds: the same ratio of times, each start's init included. "
            f"GaussianImage (theirs, Table 1): {ref['psnr']} dB on Kodak with {ref['n']:,} Gaussians after "
            f"{ref['iterations']:,} iterations ({ref['seconds']:g} s, GPU).\n")


def summarise(out: Path, figures: Path, images: list[Path], dataset: str = "kodak",
              visual: tuple[str, ...] = ()) -> dict[str, Path]:
    """Write the tables (Markdown) and figures (PNG) of a finished (or partial) study; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import study as plots

    studies = load_runs(out)
    if not studies:
        raise GilabError(f"no results under {out / 'runs'}: run the study first")
    figures.mkdir(parents=True, exist_ok=True)
    config = studies[0]["config"]
    iterations = config.get("iterations")
    inits = {r["init"] for s in studies for r in s["runs"]}
    dates = sorted(s["date"] for s in studies)
    machine = f"Machine: {studies[0]['machine']}; runs dated {dates[0]} to {dates[-1]}; recipe {config['param']}.\n"
    mode = f"Convergence study: {iterations:,} iterations per start" if iterations else "Time-to-quality study"
    md = [f"# {mode} ({dataset}, {len(studies)} images)\n", machine]
    written = {}
    fast = "net" if "net" in inits else "quadtree"
    if iterations:
        md.append(convergence_table(studies))
        fig = plots.plot_psnr_vs_time(studies, key="iteration")
        written["psnr_vs_iterations"] = figures / "study_psnr_vs_iterations.png"
        fig.savefig(written["psnr_vs_iterations"], dpi=120)
        if "random" in inits:
            fig = plots.plot_speedup_vs_milestone(studies)
            written["speedup_vs_milestone"] = figures / "study_speedup_vs_milestone.png"
            fig.savefig(written["speedup_vs_milestone"], dpi=120)
    else:
        md.append(quality_table(studies))
        if fast in inits and "random" in inits:
            md += [f"\n## Speed-up of `{fast}` over `random` at the same N\n", speedup_table(studies, fast, "random")]
        ref = REFERENCE.get(dataset)
        if ref:
            md.append(f"\nPublished (theirs, {ref['source']}): N {ref['n']:,}, init PSNR {ref['init_psnr']} dB, "
                      f"init time {ref['init_seconds']} s.\n")
        if visual:
            fig = plots.plot_visual_grid(out, studies, images, list(visual),
                                         inits=tuple(k for k in (fast, "random") if k in inits))
            written["visual"] = figures / "study_visual_grid.png"
            fig.savefig(written["visual"], dpi=72)
            if "net" in inits:
                fig = plots.plot_ppm_overlay(out, images, list(visual))
                written["ppm_overlay"] = figures / "study_ppm_overlay.png"
                fig.savefig(written["ppm_overlay"], dpi=100)
    fig = plots.plot_psnr_vs_time(studies)
    written["psnr_vs_time"] = figures / "study_psnr_vs_time.png"
    fig.savefig(written["psnr_vs_time"], dpi=120)
    if fast in inits:
        fig = plots.plot_n_vs_detail(studies, images, fast)
        written["n_vs_detail"] = figures / "study_n_vs_detail.png"
        fig.savefig(written["n_vs_detail"], dpi=120)
    if (out / "runs").resolve() != figures.resolve():  # the numbers behind the figures travel with them
        for path in sorted((out / "runs").glob("*.json")):
            shutil.copyfile(path, figures / path.name)
    written["tables"] = write_atomic(figures / "study_tables.md", "\n".join(md))
    plt.close("all")
    return written
