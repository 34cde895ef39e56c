"""The paper's time-to-quality study: how fast does each start reach a given quality at the same N?

    gilab bench --budgets 2 5 10 30 60 --out figures/study          # Kodak, inits net / quadtree / random
    python benchmarks/reproduce.py ...                               # the same

For every image of a dataset, the generator ("net") sets N; the quad-tree and random starts are made at
that same N. Each start is fine-tuned under one protocol (gilab.fit: Adan, lr 1e-3, L2 on the clamped
render) for the largest budget, and the Gaussians are snapshotted as the clock passes each smaller
budget, so one run per (image, start) gives every budget. Time counts the init, as the paper does.

Results go to one JSON per image (``<out>/runs/<image>.json``, written atomically), so an interrupted
study resumes where it stopped and several processes (``--shard i/n``, or torchrun ranks) can share it.
:func:`summarise` turns the JSON files into the tables and figures.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import starts
from .files import write_atomic
from .fitting import FitState, fit

INITS = starts.STARTS


@dataclass
class StudyConfig:
    budgets: tuple[float, ...] = (2, 5, 10, 30, 60)  # seconds, init included
    inits: tuple[str, ...] = INITS
    param: str = "cholesky"
    kernel_size: int = 3
    density: float = 1.0
    seed: int = 0
    history_points: int = 400  # the PSNR curve kept per run (log-spaced in time)


@dataclass
class Snapshot:
    budget: float
    seconds: float
    iteration: int
    psnr: float = math.nan
    ms_ssim: float = math.nan


@dataclass
class RunRecord:
    init: str
    n: int
    init_seconds: float
    init_psnr: float
    snapshots: list[Snapshot] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    iteration: list[int] = field(default_factory=list)


# ------------------------------------------------------------------- starts
def make_start(kind: str, image: torch.Tensor, n: int | None, config: StudyConfig, generator=None):
    """(Gaussians2D, seconds spent) for start ``kind`` at ``n`` Gaussians, made as the study's ``config`` says
    (:func:`gilab.starts.make_start`; the generator decides n for "net")."""
    return starts.make_start(kind, image, None if kind == "net" else n, param=config.param, seed=config.seed,
                             kernel_size=config.kernel_size, density=config.density, generator=generator)


# ---------------------------------------------------------------------- run
def run_one(image: torch.Tensor, kind: str, n: int | None, config: StudyConfig, generator=None,
            progress: bool = False, save_prefix: Path | None = None) -> RunRecord:
    """Fine-tune one start for the largest budget, snapshotting the Gaussians as each budget passes.

    With ``save_prefix``, the start and every snapshot are saved as ``<prefix>_<init>_<budget>.safetensors``
    (budget "init" for the start), for the visual figures."""
    from .metrics import ms_ssim, psnr
    from .render import render

    gaussians, init_seconds = make_start(kind, image, n, config, generator)
    budgets = sorted(config.budgets)
    snapshots: list[tuple[Snapshot, object]] = []

    last_seconds = [init_seconds]

    def snapshot_when_due(state: FitState):
        # Keep the Gaussians of the last step that ends within each budget: snapshot now if the next step,
        # taking as long as this one did, would end past it (a slow step makes this conservative, never late).
        step = state.seconds - last_seconds[0]
        last_seconds[0] = state.seconds
        while len(snapshots) < len(budgets) and state.seconds + step > budgets[len(snapshots)]:
            snapshots.append((Snapshot(budgets[len(snapshots)], state.seconds, state.iteration), state.gaussians))

    result = fit(image, init=gaussians, seconds=budgets[-1], param=config.param, seed=config.seed,
                 init_seconds=init_seconds, callback=snapshot_when_due, callback_every=1, progress=progress)
    while len(snapshots) < len(budgets):  # budgets the clock reached only at the very end
        snapshots.append((Snapshot(budgets[len(snapshots)], result.seconds, result.iterations), result.gaussians))
    _, height, width = image.shape
    if save_prefix is not None:
        gaussians.save(f"{save_prefix}_{kind}_init.safetensors")
        for snap, g in snapshots:
            g.save(f"{save_prefix}_{kind}_{snap.budget:g}s.safetensors")
    for snap, g in snapshots:  # scored after the clock stopped: evaluation is not training time
        with torch.no_grad():
            out = render(g, height, width).clamp(0, 1)
        snap.psnr = psnr(out, image).item()
        snap.ms_ssim = ms_ssim(out, image, fallback="scales").item()
    h = result.history
    keep = _log_spaced(h.seconds, config.history_points)
    return RunRecord(kind, len(gaussians), init_seconds, h.psnr[0], [s for s, _ in snapshots],
                     [h.seconds[i] for i in keep], [h.psnr[i] for i in keep], [h.iteration[i] for i in keep])


def _log_spaced(seconds: list[float], count: int) -> list[int]:
    """Indices of about ``count`` rows spread evenly in log time (the first and last always kept)."""
    if len(seconds) <= count:
        return list(range(len(seconds)))
    lo, hi = math.log(max(seconds[0], 1e-3)), math.log(max(seconds[-1], 1e-3))
    marks = [math.exp(lo + (hi - lo) * k / (count - 1)) for k in range(count)]
    picked, j = [], 0
    for mark in marks:
        while j < len(seconds) - 1 and seconds[j] < mark:
            j += 1
        if not picked or picked[-1] != j:
            picked.append(j)
    return picked


def run_study(images: list[Path], out: Path, config: StudyConfig, shard: tuple[int, int] = (0, 1),
              progress: bool = True) -> list[Path]:
    """Run every (image, start) of this shard not already on disk; returns the per-image JSON files."""
    from tqdm.auto import tqdm

    from .io import load_image

    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    index, count = shard
    mine = [p for i, p in enumerate(sorted(images)) if i % count == index]
    generator = _load_generator() if "net" in config.inits else None
    warm_up()
    written = []
    for path in tqdm(mine, desc=f"study shard {index + 1}/{count}", unit="image", disable=not progress):
        target = runs / f"{Path(path).stem}.json"
        if target.exists():
            written.append(target)
            continue
        image = load_image(path)
        records, n = [], None
        snapshots_dir = out / "gaussians"
        snapshots_dir.mkdir(exist_ok=True)
        for kind in _ordered(config.inits):
            record = run_one(image, kind, n, config, generator, save_prefix=snapshots_dir / Path(path).stem)
            n = n or record.n  # the first start (the net when present) fixes N for the others
            records.append(record)
        if n is None:
            continue
        payload = {"image": Path(path).name, "height": image.shape[1], "width": image.shape[2],
                   "config": asdict(config), "machine": machine_description(),
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "runs": [asdict(r) for r in records]}
        _write_json_atomic(target, payload)
        written.append(target)
    return written


def warm_up():
    """Load the rasterizer's compiled kernels once, so that no start pays for them in its timed budget."""
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    fit(image, n=20, iters=2, progress=False)
    fit(image, n=20, iters=2, param="rs", progress=False)


def _ordered(inits) -> list[str]:
    """The net first (it sets N); random needs an N, so without the net the quad-tree goes first."""
    return sorted(inits, key=lambda k: INITS.index(k))


def _load_generator():
    from .generator import Generator

    return Generator.from_pretrained()


def _write_json_atomic(path: Path, payload: dict):
    write_atomic(path, json.dumps(payload, indent=1))


def machine_description() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


# ------------------------------------------------------------------ summary
def load_runs(out: Path) -> list[dict]:
    """The per-image results under ``out``: ``gilab bench``'s ``<out>/runs/*.json``, or the same files directly in
    ``out`` (as committed in ``figures/study/``)."""
    out = Path(out)
    folder = out / "runs" if (out / "runs").is_dir() else out
    studies = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return [s for s in studies if "runs" in s]  # not targets.json and the like


def psnr_at(run: dict, seconds: float) -> float:
    """PSNR of a run at ``seconds`` (the last logged point not after it; NaN before the first)."""
    best = math.nan
    for t, p in zip(run["seconds"], run["psnr"]):
        if t > seconds:
            break
        best = p
    return best


def time_to_reach(run: dict, target_psnr: float) -> float | None:
    """First logged time at which the run's PSNR reaches ``target_psnr``; None if it never does."""
    for t, p in zip(run["seconds"], run["psnr"]):
        if p >= target_psnr:
            return t
    return None


def speedups(studies: list[dict], fast: str = "net", slow: str = "random") -> dict[float, list[tuple[float, bool]]]:
    """{budget B: [(speed-up, is_lower_bound) per image]}: the time ``slow`` needs to reach the PSNR that
    ``fast`` has at B, divided by B. Where ``slow`` never gets there, the bound (its longest time) / B."""
    table: dict[float, list[tuple[float, bool]]] = {}
    for study in studies:
        runs = {r["init"]: r for r in study["runs"]}
        if fast not in runs or slow not in runs:
            continue
        for snap in runs[fast]["snapshots"]:
            budget = snap["budget"]
            reached = time_to_reach(runs[slow], snap["psnr"])
            if reached is None:
                table.setdefault(budget, []).append((runs[slow]["seconds"][-1] / budget, True))
            else:
                table.setdefault(budget, []).append((reached / budget, False))
    return table


# Published numbers, labelled as theirs (docs/method.md, section 6.1): initialisation only, no fine-tuning, GPU.
REFERENCE = {
    "kodak": {"n": 42_858, "init_psnr": 29.68, "init_seconds": 0.25, "source": "Instant-GI README (GPU)"},
    "div2k_valid_x2": {"n": 76_985, "init_psnr": 29.67, "init_seconds": 0.43, "source": "Instant-GI README (GPU)"},
}


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _median(values) -> float:
    values = sorted(values)
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def quality_table(studies: list[dict]) -> str:
    """Markdown: per start, mean N, init time and PSNR, then PSNR / MS-SSIM at every budget (means over images)."""
    inits = [k for k in INITS if any(r["init"] == k for s in studies for r in s["runs"])]
    budgets = sorted({snap["budget"] for s in studies for r in s["runs"] for snap in r["snapshots"]})
    head = "| start | mean N | init s | init PSNR | " + " | ".join(f"{b:g} s" for b in budgets) + " |"
    rows = [head, "|" + " --- |" * (4 + len(budgets))]
    for kind in inits:
        runs = [r for s in studies for r in s["runs"] if r["init"] == kind]
        cells = []
        for b in budgets:
            snaps = [sn for r in runs for sn in r["snapshots"] if sn["budget"] == b]
            cells.append(f"{_mean([sn['psnr'] for sn in snaps]):.2f} / {_mean([sn['ms_ssim'] for sn in snaps]):.4f}")
        rows.append(f"| {kind} | {_mean([r['n'] for r in runs]):,.0f} | {_mean([r['init_seconds'] for r in runs]):.2f} "
                    f"| {_mean([r['init_psnr'] for r in runs]):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n\nCells: PSNR (dB) / MS-SSIM, mean over images, time includes the init.\n"


def speedup_table(studies: list[dict], fast: str = "net", slow: str = "random") -> str:
    """Markdown: for each budget B of ``fast``, the median and range over images of (time ``slow`` needs) / B."""
    rows = [f"| {fast} budget B | median speed-up | range | images where {slow} never caught up |",
            "| --- | --- | --- | --- |"]
    for budget, values in sorted(speedups(studies, fast, slow).items()):
        ratios = [v for v, _ in values]
        bounds = sum(1 for _, bound in values if bound)
        median = _median(ratios)
        # a median that falls on a lower bound is itself only a lower bound
        med_is_bound = sum(1 for v, bound in values if bound and v <= median) > 0 and bounds * 2 >= len(values)
        rows.append(f"| {budget:g} s | {'> ' if med_is_bound else ''}{median:.1f}x | {min(ratios):.1f}x - "
                    f"{max(ratios):.1f}x | {bounds} of {len(values)} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------ figures
COLORS = {"net": "tab:red", "quadtree": "tab:green", "random": "tab:blue"}


def plot_psnr_vs_time(studies: list[dict], ax=None):
    """Mean PSNR over images against time (log axis, init included), one line per start."""
    import matplotlib.pyplot as plt

    from .plots.fitting import log_axis

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    t_max = max(r["seconds"][-1] for s in studies for r in s["runs"])
    t_min = min(max(r["seconds"][0], 1e-2) for s in studies for r in s["runs"])
    grid = [t_min * (t_max / t_min) ** (k / 199) for k in range(200)]
    for kind in INITS:
        runs = [r for s in studies for r in s["runs"] if r["init"] == kind]
        if not runs:
            continue
        # start where every image's run has started, so the mean is always over the same images
        start = max(r["seconds"][0] for r in runs)
        ts = [t for t in grid if t >= start]
        mean = [_mean([psnr_at(r, t) for r in runs]) for t in ts]
        n = _mean([r["n"] for r in runs])
        ax.plot(ts, mean, color=COLORS[kind], label=f"{kind} (mean N {n:,.0f})")
    log_axis(ax)
    ax.set_xlabel("time (s, init included)")
    ax.set_ylabel(f"mean PSNR over {len(studies)} images (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax.figure


def plot_visual_grid(out: Path, studies: list[dict], images: list[Path], names: list[str],
                     inits=("net", "random"), crop: int = 128):
    """GT | init | two short budgets | the longest, for each start on each named image, zoomed crops below."""
    import matplotlib.pyplot as plt

    from .gaussians import Gaussians2D
    from .io import load_image
    from .plots.fitting import to_numpy_image
    from .render import render

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
            g = Gaussians2D.load(out / "gaussians" / f"{name}_{kind}_{label}.safetensors")
            with torch.no_grad():
                img = render(g, height, width).clamp(0, 1)
            panels.append((f"{kind} {label}: {-10 * math.log10(torch.mean((img - target) ** 2).item()):.1f} dB", img))
        for col, (title, img) in enumerate(panels):
            top, bottom = axes[2 * row, col], axes[2 * row + 1, col]
            top.imshow(to_numpy_image(img))
            top.add_patch(plt.Rectangle((x0, y0), crop, crop, fill=False, color="yellow", lw=1))
            top.set_title(title if col else f"{name}", fontsize=8)
            bottom.imshow(to_numpy_image(img[:, y0:y0 + crop, x0:x0 + crop]), interpolation="nearest")
            for a in (top, bottom):
                a.axis("off")
    return fig


def plot_ppm_overlay(out: Path, images: list[Path], names: list[str], generator=None, crop: int = 64):
    """Per named image: the image, the network's PPM, its init Gaussians (1 std) over a zoomed crop, their render.

    The Gaussians are the study's saved ``net`` inits (``out/gaussians/<name>_net_init.safetensors``); the PPM is
    recomputed with ``generator`` (default: the shipped one), which must be the one the study ran with.
    """
    import matplotlib.pyplot as plt

    from .gaussians import Gaussians2D
    from .io import load_image
    from .plots.fitting import to_numpy_image
    from .plots.placement import plot_ellipses
    from .render import render

    generator = generator if generator is not None else _load_generator()
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

    from .io import load_image

    by_name = {Path(p).name: p for p in images}
    xs, ys, labels = [], [], []
    for study in studies:
        run = next((r for r in study["runs"] if r["init"] == kind), None)
        if run is None:
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


def mean_gradient(image: torch.Tensor) -> float:
    """Mean magnitude of the luminance gradient (finite differences), a simple detail measure."""
    gray = image.mean(0)
    gx = gray[:, 1:] - gray[:, :-1]
    gy = gray[1:, :] - gray[:-1, :]
    return float(torch.sqrt(gx[:-1] ** 2 + gy[:, :-1] ** 2).mean())


def summarise(out: Path, figures: Path, images: list[Path], dataset: str = "kodak",
              visual: tuple[str, ...] = ()) -> dict[str, Path]:
    """Write the tables (Markdown) and figures (PNG) of a finished (or partial) study; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = load_runs(out)
    if not studies:
        raise ValueError(f"no results under {out / 'runs'}: run the study first")
    figures.mkdir(parents=True, exist_ok=True)
    written = {}
    inits = {r["init"] for s in studies for r in s["runs"]}
    dates = sorted(s["date"] for s in studies)
    machine = f"Machine: {studies[0]['machine']}; runs dated {dates[0]} to {dates[-1]}.\n"
    md = [f"# Time-to-quality study ({dataset}, {len(studies)} images)\n", machine, quality_table(studies)]
    fast = "net" if "net" in inits else "quadtree"
    if fast in inits and "random" in inits:
        md += [f"\n## Speed-up of `{fast}` over `random` at the same N\n", speedup_table(studies, fast, "random")]
    ref = REFERENCE.get(dataset)
    if ref:
        md.append(f"\nPublished (theirs, {ref['source']}): N {ref['n']:,}, init PSNR {ref['init_psnr']} dB, "
                  f"init time {ref['init_seconds']} s.\n")
    if (out / "runs").resolve() != figures.resolve():  # the numbers behind the figures travel with them
        for path in sorted((out / "runs").glob("*.json")):
            shutil.copyfile(path, figures / path.name)
    written["tables"] = figures / "study_tables.md"
    written["tables"].write_text("\n".join(md))
    fig = plot_psnr_vs_time(studies)
    written["psnr_vs_time"] = figures / "study_psnr_vs_time.png"
    fig.savefig(written["psnr_vs_time"], dpi=120)
    if fast in inits:
        fig = plot_n_vs_detail(studies, images, fast)
        written["n_vs_detail"] = figures / "study_n_vs_detail.png"
        fig.savefig(written["n_vs_detail"], dpi=120)
    if visual:
        fig = plot_visual_grid(out, studies, images, list(visual), inits=tuple(k for k in (fast, "random")
                                                                                 if k in inits))
        written["visual"] = figures / "study_visual_grid.png"
        fig.savefig(written["visual"], dpi=72)
        if "net" in inits:
            fig = plot_ppm_overlay(out, images, list(visual))
            written["ppm_overlay"] = figures / "study_ppm_overlay.png"
            fig.savefig(written["ppm_overlay"], dpi=100)
    plt.close("all")
    return written
