"""Rate-distortion study on Kodak: gilab's Gaussian codec against JPEG, WebP and AVIF, and GaussianImage's codec.

    nice -n 10 python benchmarks/codec.py                    # all 24 images, ~45 CPU-minutes, resumable
    python benchmarks/codec.py --shard 0/2 & python benchmarks/codec.py --shard 1/2    # side by side
    python benchmarks/codec.py --summary-only                # figures/codec.{json,md} and codec_rd.png only

For every image, for every target rate (``--rates``, bpp) and encoding budget (``--budgets``, wall-clock seconds,
the start, both fine-tunes and the entropy coding included), ``gilab.codec.compress`` runs from the network's
start and from GaussianImage's random start; the two starts take turns, so that both meet the same machine load.
JPEG (libjpeg, optimised Huffman tables), WebP (method 6) and AVIF (Pillow's defaults) are then encoded at the
rate gilab reached with the net start and the longest budget (the highest quality whose file is no larger), and
along a quality sweep for their curves. Everything is scored as an 8-bit PNG would be: PSNR and MS-SSIM
(pytorch_msssim, as the papers) of the decoded image rounded to 8 bits, bpp = 8 x file bytes / pixels.

Per-image results go to ``--cache`` (one JSON per image, outside the repository): a rerun skips finished images,
so the study survives interruptions. The summary (Kodak means, the two targets, the table) goes to
figures/codec.json, figures/codec.md and figures/codec_rd.png. The default sizes fit a 2-core machine that others
share: one torch thread, 3 rates x 2 budgets (2.5 s, 12.5 s: a ratio of 5, the speed-up the net start must show)
x 2 starts = 90 s of encoding per image, plus about 25 s for Pillow's codecs and the scores: 45 minutes in all.
"""

from __future__ import annotations

import argparse
import dataclasses
import io as bytes_io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RATES = (0.15, 0.3, 0.6)
BUDGETS = (2.5, 12.5)
INITS = ("net", "random")
CACHE = Path("/work/cache/gilab/codec")
FIGURES = Path(__file__).resolve().parent.parent / "figures"
#: Pillow codecs: (format, save options, qualities swept for the curves, quality range searched for matching).
PILLOW = {
    "JPEG": ("JPEG", {"optimize": True}, (2, 5, 10, 20, 30, 50, 75), (1, 95)),
    "WebP": ("WEBP", {"method": 6}, (0, 5, 10, 20, 30, 50, 75), (0, 100)),
    "AVIF": ("AVIF", {}, (0, 5, 10, 20, 30, 50, 75), (0, 100)),
}
#: GaussianImage's codec on Kodak as published (Zhang et al., ECCV 2024), (bpp, PSNR dB); a secondary
#: transcription of their rate-distortion figure, not measured here.
GAUSSIANIMAGE_PUBLISHED = [(0.15, 25.0), (1.0, 29.7)]


# --------------------------------------------------------------------- scoring
def to_8bit(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] rounded to what an 8-bit PNG holds."""
    return (image.clamp(0, 1) * 255).round() / 255


def scores(decoded: torch.Tensor, target: torch.Tensor) -> dict:
    from gilab.metrics import ms_ssim, psnr

    decoded = to_8bit(decoded)
    return {"psnr": float(psnr(decoded, target)), "ms_ssim": float(ms_ssim(decoded, target, fallback="scales"))}


# ------------------------------------------------------------------ gilab runs
def gilab_rows(image: torch.Tensor, rates, budgets, generator, net_start: str = "gain") -> list[dict]:
    """One row per (rate, budget, start): the codec's rate, quality and times. ``net_start``: how the net start
    reaches codec-sized N, "gain" (a density gain, the codec's "net") or "zoom" (its "net-zoom")."""
    from gilab import codec

    rows = []
    for rate in rates:
        for budget in budgets:
            for init in INITS:  # alternate the starts, so both meet the same load on a shared machine
                codec_init = "net-zoom" if init == "net" and net_start == "zoom" else init
                r = codec.compress(image, bpp=rate, init=codec_init, seconds=budget, generator=generator)
                rows.append({"codec": "gilab", "init": init, "budget_s": budget, "target_bpp": rate, "n": r.n,
                             "bpp": r.bpp, **scores(r.image, image), "psnr_float_decode": r.psnr,
                             "psnr_before_quantisation": r.float_psnr, "encode_s": r.seconds,
                             "decode_s": r.decode_seconds, "iterations": list(r.iterations), "bits": r.bits})
                print(f"  gilab {init:6s} {budget:4.0f} s  {r.summary()}", flush=True)
    return rows


# ----------------------------------------------------------------- Pillow runs
def pillow_encode(image: torch.Tensor, name: str, quality: int) -> tuple[bytes, float]:
    """(file bytes, encoding seconds) of ``image`` (3, H, W) with Pillow's ``name`` codec at ``quality``."""
    fmt, options, _, _ = PILLOW[name]
    pil = Image.fromarray((to_8bit(image) * 255).byte().permute(1, 2, 0).numpy())
    buffer = bytes_io.BytesIO()
    tic = time.perf_counter()
    pil.save(buffer, format=fmt, quality=quality, **options)
    return buffer.getvalue(), time.perf_counter() - tic


def pillow_row(image: torch.Tensor, name: str, quality: int, **extra) -> dict:
    data, encode_s = pillow_encode(image, name, quality)
    tic = time.perf_counter()
    with Image.open(bytes_io.BytesIO(data)) as im:
        decoded = np.asarray(im.convert("RGB"))
    decode_s = time.perf_counter() - tic
    decoded = torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255
    _, height, width = image.shape
    return {"codec": name, "quality": quality, "bpp": 8 * len(data) / (height * width),
            **scores(decoded, image), "encode_s": encode_s, "decode_s": decode_s, **extra}


def matched_quality(image: torch.Tensor, name: str, bpp: float) -> int:
    """The highest quality whose file takes at most ``bpp`` (the lowest quality if none does); bisection."""
    _, height, width = image.shape
    low, high = PILLOW[name][3]
    rate = lambda q: 8 * len(pillow_encode(image, name, q)[0]) / (height * width)
    if rate(low) > bpp:
        return low
    while low < high:  # invariant: rate(low) <= bpp
        mid = (low + high + 1) // 2
        low, high = (mid, high) if rate(mid) <= bpp else (low, mid - 1)
    return low


def pillow_rows(image: torch.Tensor, gilab: list[dict], rates, budget: float) -> list[dict]:
    """Each Pillow codec along its quality sweep, and at the rate gilab's net start reached (longest budget)."""
    rows = []
    for name, (_, _, sweep, _) in PILLOW.items():
        rows += [pillow_row(image, name, q, kind="sweep") for q in sweep]
        for rate in rates:
            target = next(r["bpp"] for r in gilab if r["init"] == "net" and r["budget_s"] == budget
                          and r["target_bpp"] == rate)
            rows.append(pillow_row(image, name, matched_quality(image, name, target), kind="matched",
                                   target_bpp=rate, gilab_bpp=target))
    return rows


# ------------------------------------------------------------------- per image
def run_image(path: Path, out: Path, rates, budgets, generator, net_start: str = "gain") -> dict:
    from gilab.io import load_image
    from gilab.study.protocol import weights_fingerprint  # the shipped weights' sha256: which generator ran

    image = load_image(path)
    tic = time.perf_counter()
    gilab = gilab_rows(image, rates, budgets, generator, net_start)
    record = {"image": path.stem, "net_start": net_start, "size": list(image.shape[1:]), "rows": gilab + pillow_rows(image, gilab, rates,
                                                                                               max(budgets)),
              "seconds": time.perf_counter() - tic, "load_average": os.getloadavg()[0],
              "threads": torch.get_num_threads(), "generator": weights_fingerprint()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(out)  # a finished image is never half written
    return record


def warm_up(generator):
    """Load the render kernels and the generator before any clock runs."""
    from gilab import codec

    # N = 200, not fewer: the generator's count search must land within 2 %, and N moves in steps of about 2
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    for init in (*INITS, "net-zoom"):
        codec.compress(image, n=200, init=init, iters=4, generator=generator)


# --------------------------------------------------------------------- summary
def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def summarise(records: list[dict], rates, budgets) -> dict:
    """Kodak means of every configuration, and the two targets."""
    rows = [dict(r, image=rec["image"]) for rec in records for r in rec["rows"]]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["codec"] == "gilab":
            key = ("gilab", r["init"], r["budget_s"], r["target_bpp"])
        else:
            key = (r["codec"], r["kind"], r.get("quality") if r["kind"] == "sweep" else None, r.get("target_bpp"))
        groups.setdefault(key, []).append(r)
    means = []
    for key, group in groups.items():
        entry = {"codec": key[0], "images": len(group)}
        if key[0] == "gilab":
            entry.update(init=key[1], budget_s=key[2], target_bpp=key[3], n=mean(r["n"] for r in group),
                         psnr_before_quantisation=mean(r["psnr_before_quantisation"] for r in group))
        else:
            entry.update(kind=key[1], quality=key[2], target_bpp=key[3])
        for field in ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s"):
            entry[field] = mean(r[field] for r in group)
        means.append(entry)
    return {"means": means, "targets": targets(means, rows, rates, budgets)}


def find(means, **match) -> dict | None:
    return next((m for m in means if all(m.get(k) == v for k, v in match.items())), None)


def sweep_curve(means, name) -> tuple[np.ndarray, np.ndarray]:
    points = sorted((m["bpp"], m["psnr"]) for m in means if m["codec"] == name and m["kind"] == "sweep")
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def targets(means, rows, rates, budgets) -> dict:
    """Target 1: gilab (each start at the longest budget) above JPEG in PSNR at <= 0.3 bpp (Kodak means: JPEG at
    the matched rate, and JPEG's quality sweep interpolated at gilab's rate; per image, gilab against that image's
    own JPEG sweep at gilab's rate). Target 2: the net start reaches the random start's longest-budget RD point in
    >= 5x less time (net at the shortest budget against random at the longest, when their ratio is 5; and the
    number of images where it does)."""
    short, long = min(budgets), max(budgets)
    out = {"beat_jpeg_at_0.3bpp": [], "net_5x_faster": []}
    jpeg_bpp, jpeg_psnr = sweep_curve(means, "JPEG")
    images = sorted({r["image"] for r in rows})
    for rate in rates:
        for init in ("net", "random"):
            gilab = find(means, codec="gilab", init=init, budget_s=long, target_bpp=rate)
            jpeg = find(means, codec="JPEG", kind="matched", target_bpp=rate)
            if gilab is None or jpeg is None or gilab["bpp"] > 0.3:
                continue
            curve = float(np.interp(gilab["bpp"], jpeg_bpp, jpeg_psnr)) if len(jpeg_bpp) else math.nan
            ahead = []  # per image: gilab above its own JPEG sweep at gilab's rate?
            for image in images:
                mine = [r for r in rows if r["image"] == image]
                run = next((r for r in mine if r["codec"] == "gilab" and r["init"] == init
                            and r["budget_s"] == long and r["target_bpp"] == rate), None)
                sweep = sorted((r["bpp"], r["psnr"]) for r in mine if r["codec"] == "JPEG" and r["kind"] == "sweep")
                if run is not None and sweep:
                    own = np.interp(run["bpp"], [b for b, _ in sweep], [q for _, q in sweep])
                    ahead.append(bool(run["psnr"] > own))
            out["beat_jpeg_at_0.3bpp"].append({
                "target_bpp": rate, "init": init, "budget_s": long, "gilab_bpp": gilab["bpp"],
                "gilab_psnr": gilab["psnr"], "jpeg_matched_bpp": jpeg["bpp"], "jpeg_matched_psnr": jpeg["psnr"],
                "jpeg_curve_psnr_at_gilab_bpp": curve, "margin_db": gilab["psnr"] - max(jpeg["psnr"], curve),
                "met": gilab["psnr"] > max(jpeg["psnr"], curve), "images_ahead_of_own_jpeg_curve": sum(ahead),
                "images": len(ahead)})
    for rate in rates:
        random_long = find(means, codec="gilab", init="random", budget_s=long, target_bpp=rate)
        net_short = find(means, codec="gilab", init="net", budget_s=short, target_bpp=rate)
        if random_long is None or net_short is None:
            continue
        reached = []  # per image: does the net start at the shortest budget match random at the longest?
        for image in sorted({r["image"] for r in rows}):
            runs = {(r["init"], r["budget_s"]): r for r in rows if r["image"] == image and r["codec"] == "gilab"
                    and r["target_bpp"] == rate}
            if ("random", long) in runs and ("net", short) in runs:
                reached.append(runs[("net", short)]["psnr"] >= runs[("random", long)]["psnr"])
        out["net_5x_faster"].append({
            "target_bpp": rate, "budget_ratio": long / short, "net_short_bpp": net_short["bpp"],
            "net_short_psnr": net_short["psnr"], "random_long_bpp": random_long["bpp"],
            "random_long_psnr": random_long["psnr"], "margin_db": net_short["psnr"] - random_long["psnr"],
            "met_on_the_mean": net_short["psnr"] >= random_long["psnr"] and long / short >= 5,
            "images_where_net_short_matches_random_long": sum(reached), "images": len(reached)})
    return out


def table(summary: dict, budgets) -> str:
    """The Markdown table of Kodak means: gilab rows, Pillow at the matched rates, GaussianImage as published."""
    lines = ["| codec | setting | bpp | PSNR (dB) | MS-SSIM | encode | decode |", "| --- | --- | --- | --- | --- | --- | --- |"]
    means = sorted(summary["means"], key=lambda m: (m["codec"] != "gilab", m["codec"], m.get("target_bpp") or 0,
                                                     m.get("init", ""), m.get("budget_s") or 0))
    for m in means:
        if m["codec"] == "gilab":
            setting = f"{m['init']} start, {m['budget_s']:g} s budget, N {m['n']:,.0f}"
        elif m["kind"] == "matched":
            setting = f"matched to gilab at {m['target_bpp']:g} bpp"
        else:
            continue
        lines.append(f"| {m['codec']} | {setting} | {m['bpp']:.3f} | {m['psnr']:.2f} | {m['ms_ssim']:.4f} | "
                     f"{_duration(m['encode_s'])} | {_duration(m['decode_s'])} |")
    for bpp, value in GAUSSIANIMAGE_PUBLISHED:
        lines.append(f"| GaussianImage (published, theirs) | 50k iterations, GPU | {bpp:.2f} | {value:.1f} | - | - | - |")
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def plot(summary: dict, path: Path, budgets):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    means = summary["means"]
    for ax, metric, label in [(axes[0], "psnr", "PSNR (dB)"), (axes[1], "ms_ssim", "MS-SSIM")]:
        for init, colour, style in [("net", "tab:blue", "-"), ("random", "tab:orange", ":")]:
            for budget in budgets:
                points = sorted((m["bpp"], m[metric]) for m in means if m["codec"] == "gilab" and m["init"] == init
                                and m["budget_s"] == budget)
                long = budget == max(budgets)
                if points:
                    ax.plot(*zip(*points), style, color=colour, marker="o", lw=2.2 if long else 1,
                            alpha=1 if long else 0.55, label=f"gilab, {init} start, {budget:g} s")
        for name, colour in [("JPEG", "tab:red"), ("WebP", "tab:green"), ("AVIF", "tab:purple")]:
            points = sorted((m["bpp"], m[metric]) for m in means if m["codec"] == name and m["kind"] == "sweep")
            ax.plot(*zip(*points), "--", color=colour, marker=".", label=f"{name} (Pillow)")
        if metric == "psnr":
            ax.plot(*zip(*GAUSSIANIMAGE_PUBLISHED), "*", color="black", ms=12,
                    label="GaussianImage (published, theirs)")
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    n_images = max(m["images"] for m in means)
    fig.suptitle(f"Kodak ({n_images} images): mean rate and quality; gilab encoded on a shared 2-core CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(cache: Path, figures: Path, rates, budgets, config: dict):
    records = [json.loads(p.read_text()) for p in sorted((cache / "runs").glob("*.json"))]
    if not records:
        raise SystemExit(f"no per-image results in {cache / 'runs'}")
    summary = summarise(records, rates, budgets)
    summary.update(config=config, machine=machine(), images=[r["image"] for r in records],
                   generator=sorted({r.get("generator", "not recorded") for r in records}),
                   per_image=records, gaussianimage_published={"points_bpp_psnr": GAUSSIANIMAGE_PUBLISHED,
                                                               "source": "GaussianImage (Zhang et al., ECCV 2024), "
                                                               "Kodak RD figure, secondary transcription; theirs"})
    figures.mkdir(parents=True, exist_ok=True)
    (figures / "codec.json").write_text(json.dumps(summary, indent=1))
    (figures / "codec.md").write_text(table(summary, budgets))
    plot(summary, figures / "codec_rd.png", budgets)
    print(table(summary, budgets))
    print(json.dumps(summary["targets"], indent=1))


def machine() -> dict:
    from gilab.machine import cpu_name  # here, not at the top: gilab loads numba and torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES), help="target bpp")
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS), help="encoding seconds")
    parser.add_argument("--limit", type=int, default=None, help="only the first LIMIT Kodak images")
    parser.add_argument("--shard", default="0/1", help="i/n: this process takes images i, i+n, ...")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the cores are shared)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="per-image results (resumable)")
    parser.add_argument("--figures", type=Path, default=FIGURES)
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--net-start", choices=["gain", "zoom"], default="gain",
                        help="how the net start reaches codec-sized N: a density gain, or the image downscaled "
                             "(benchmarks/codec_start_scale.py); give zoom its own --cache and --figures")
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))  # before numba is first imported
    torch.set_num_threads(args.threads)
    from gilab import datasets
    from gilab.codec import CodecSettings
    from gilab.files import parse_shard

    rates, budgets = tuple(sorted(args.rates)), tuple(sorted(args.budgets))
    config = {"rates": rates, "budgets_s": budgets, "threads": args.threads, "inits": INITS, "net_start": args.net_start,
              "settings": dataclasses.asdict(CodecSettings())}
    if not args.summary_only:
        index, count = parse_shard(args.shard)
        paths = datasets.kodak()[: args.limit][index::count]
        from gilab.generator import Generator

        generator = Generator.from_pretrained()
        warm_up(generator)
        for path in paths:
            out = args.cache / "runs" / f"{path.stem}.json"
            if out.exists():
                if json.loads(out.read_text()).get("net_start", "gain") != args.net_start:
                    print(f"{out}: made with another --net-start; give each its own --cache", file=sys.stderr)
                    return 2
                continue
            print(f"{path.stem}:", flush=True)
            record = run_image(path, out, rates, budgets, generator, args.net_start)
            print(f"{path.stem}: done in {record['seconds']:.0f} s (load {record['load_average']:.1f})", flush=True)
    write_summary(args.cache, args.figures, rates, budgets, config)


if __name__ == "__main__":
    sys.exit(main())
