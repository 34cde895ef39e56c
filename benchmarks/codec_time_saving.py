"""How much encoding time the network's start saves, at each quality the random start reaches in its budget.

    python benchmarks/codec.py --rates 0.15 --budgets 0.6 1.2 2.5 5 10 20 --limit 8 --net-start zoom \\
        --cache CACHE --figures FIG --shard i/2                    # the runs (two processes side by side)
    python benchmarks/codec_time_saving.py --cache CACHE [CACHE ...] [--out figures/codec_time_saving.json]

The codec's 5x target compares two fixed budgets (net at 2.5 s against random at 12.5 s). This reads the same
runs along a ladder of budgets and asks the time-to-quality question instead: for every image, rate and random
budget, at what encoding time does the network's start first reach the random start's PSNR? Its curve is PSNR
against log encode time, linear between the measured budgets (the encode times as measured, not the budgets).
The saving is the random start's time over that time. When the net start's shortest encode already beats the
random point the saving is at least that ratio (a lower bound, counted as such); when the net start never gets
there within its longest budget it is at most the ratio to that budget (an upper bound). A figure shows both
starts' mean PSNR against time and the saving against the random start's budget.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from pathlib import Path


def curve(rows: list[dict], init: str, rate: float) -> list[tuple[float, float]]:
    """(encode seconds, PSNR) of one image's runs from one start at one rate, by time."""
    return sorted((r["encode_s"], r["psnr"]) for r in rows
                  if r.get("codec") == "gilab" and r["init"] == init and r["target_bpp"] == rate)


def time_to_reach(points: list[tuple[float, float]], psnr: float) -> tuple[float, str]:
    """The first time a curve reaches ``psnr``: (seconds, "exact" | "at_most" | "never").

    Linear in log time between measured points; "at_most": already reached at the first point (the time is that
    point's); "never": not reached by the last point (the time returned is the last point's)."""
    if points[0][1] >= psnr:
        return points[0][0], "at_most"
    for (t0, p0), (t1, p1) in itertools.pairwise(points):
        if p1 >= psnr:
            share = (psnr - p0) / (p1 - p0)
            return math.exp(math.log(t0) + share * (math.log(t1) - math.log(t0))), "exact"
    return points[-1][0], "never"


def savings(records: list[dict]) -> list[dict]:
    """One row per image, rate and random budget: the random point, the net start's time to it, the saving."""
    out = []
    for record in records:
        rates = sorted({r["target_bpp"] for r in record["rows"] if r.get("codec") == "gilab"})
        for rate in rates:
            net, rand = curve(record["rows"], "net", rate), curve(record["rows"], "random", rate)
            budgets = sorted(r["budget_s"] for r in record["rows"]
                             if r.get("codec") == "gilab" and r["init"] == "random" and r["target_bpp"] == rate)
            for budget, (seconds, psnr) in zip(budgets, rand):
                net_seconds, kind = time_to_reach(net, psnr)
                bound = {"exact": "equal", "at_most": "at_least", "never": "at_most"}[kind]
                out.append({"image": record["image"], "target_bpp": rate, "random_budget_s": budget,
                            "random_s": round(seconds, 3), "random_psnr": round(psnr, 3),
                            "net_s": round(net_seconds, 3), "saving": round(seconds / net_seconds, 2),
                            "saving_is": bound})
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Per rate and random budget: median saving, images at >= 5x (bounds counted where they decide)."""
    out = []
    for rate in sorted({r["target_bpp"] for r in rows}):
        for budget in sorted({r["random_budget_s"] for r in rows if r["target_bpp"] == rate}):
            at = [r for r in rows if r["target_bpp"] == rate and r["random_budget_s"] == budget]
            five = sum(r["saving"] >= 5 and r["saving_is"] != "at_most" for r in at)
            below = sum(r["saving"] < 5 and r["saving_is"] != "at_least" for r in at)
            out.append({"target_bpp": rate, "random_budget_s": budget, "images": len(at),
                        "random_psnr_mean": round(statistics.mean(r["random_psnr"] for r in at), 2),
                        "median_saving": round(statistics.median(r["saving"] for r in at), 2),
                        "images_saving_at_least_5x": five, "images_saving_below_5x": below,
                        "net_never_reached": sum(r["saving_is"] == "at_most" for r in at),
                        "net_first_point_already_above": sum(r["saving_is"] == "at_least" for r in at)})
    return out


def plot(records: list[dict], summary: list[dict], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    rates = sorted({s["target_bpp"] for s in summary})
    for rate in rates:
        for init, style in (("net", "-o"), ("random", "--s")):
            curves = [curve(r["rows"], init, rate) for r in records]
            n = min(len(c) for c in curves)
            t = [statistics.median(c[k][0] for c in curves) for k in range(n)]
            p = [statistics.mean(c[k][1] for c in curves) for k in range(n)]
            left.plot(t, p, style, label=f"{init} start, {rate:g} bpp")
        at = [s for s in summary if s["target_bpp"] == rate]
        line, = right.plot([s["random_budget_s"] for s in at], [s["median_saving"] for s in at], "-", label=f"{rate:g} bpp")
        for s in at:  # a bound where most images give one: the ladder's ends cannot say more
            half = s["images"] / 2
            marker = "^" if s["net_first_point_already_above"] > half else ("v" if s["net_never_reached"] > half else "o")
            right.plot(s["random_budget_s"], s["median_saving"], marker, color=line.get_color(), ms=8)
    left.set(xscale="log", xlabel="encode time, s (median over images)", ylabel="PSNR, dB (mean)",
             title="Quality against encoding time")
    right.axhline(5, color="grey", lw=0.8, ls=":")
    right.set(xscale="log", yscale="log", xlabel="random start's budget, s",
              ylabel="time saved by the net start (x, median)",
              title="The net start's saving (^ at least, v at most)")
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    right.yaxis.set_major_locator(FixedLocator([0.5, 1, 2, 5, 10, 20]))
    right.yaxis.set_major_formatter(ScalarFormatter())
    right.yaxis.set_minor_formatter(NullFormatter())
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merged(records: list[dict]) -> list[dict]:
    """One record per image, the rows of runs made at different rates (in different caches) put together."""
    by_image = {}
    for record in records:
        if record["image"] in by_image:
            by_image[record["image"]]["rows"] += record["rows"]
        else:
            by_image[record["image"]] = {**record, "rows": list(record["rows"])}
    return [by_image[image] for image in sorted(by_image)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, nargs="+", required=True,
                        help="benchmarks/codec.py's --cache of the runs (several: their rates are merged per image)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "figures" / "codec_time_saving.json")
    args = parser.parse_args(argv)
    records = merged([json.loads(p.read_text()) for cache in args.cache for p in sorted((cache / "runs").glob("*.json"))])
    if not records:
        print(f"{' '.join(map(str, args.cache))}: no runs of benchmarks/codec.py there", file=sys.stderr)
        return 2
    budgets = {tuple(sorted({r["budget_s"] for r in rec["rows"] if r.get("codec") == "gilab"})) for rec in records}
    if len(budgets) != 1 or len(next(iter(budgets))) < 3:
        print(f"{' '.join(map(str, args.cache))}: the runs need the same ladder of at least 3 budgets, found {sorted(budgets)}", file=sys.stderr)
        return 2
    rows = savings(records)
    summary = summarise(rows)
    for s in summary:
        print(f"{s['target_bpp']:g} bpp, random at {s['random_budget_s']:g} s ({s['random_psnr_mean']:.2f} dB): net "
              f"start {s['median_saving']:.1f}x sooner (median), >= 5x on {s['images_saving_at_least_5x']} of "
              f"{s['images']}, below on {s['images_saving_below_5x']}")
    out = {"benchmark": __doc__.split("\n")[0], "budgets_s": list(next(iter(budgets))),
           "images": [r["image"] for r in records], "net_start": records[0].get("net_start"),
           "generator": records[0].get("generator"), "summary": summary, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    plot(records, summary, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
