"""Which generator weights to ship: held-out BSDS500 val images, several weights side by side (issue 18's rule).

    GILAB_DATA=/work/shared/data python benchmarks/generator_val.py --weights shipped /path/to/new.safetensors \
        [--skip 10 --count 30] [--out figures/generator_val.json]

Training validates on the first 10 images of BSDS500 ``val`` (sorted by name, ``--val-images 10``), so those
helped pick nothing but were looked at during training; the model choice is made on the next 30 (``--skip 10
--count 30``), which no run has seen. Kodak makes no model choice. Per image and per weights, at two counts: the
network's own choice (k = 3, density 1), and the paper's Kodak mean 42,858 scaled to the image's area (16,829 on a
481x321 BSDS image: every weights file gets the same N, as in ``benchmarks/generator.py``); PSNR of the fields' colours alone (the network as the paper builds it) and after
the colour step (what ``Generator.from_pretrained()`` returns when its config says so). The summary gives the
means and the paired per-image difference of every weights file against the first one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from generator_ablation import scaled_count  # one home for the paper's count scaled to an image


def score(gen, image, target_count=None) -> dict:
    import gilab
    from gilab.generator.colour_step import apply_colour_step
    from gilab.metrics import psnr

    g = gen(image, colour_step=False, target_count=target_count)
    fields = gilab.render(g, *image.shape[-2:]).clamp(0, 1)
    stepped = gilab.render(apply_colour_step(g, image), *image.shape[-2:]).clamp(0, 1)
    return {"n": len(g), "psnr_fields": float(psnr(fields, image)), "psnr_colour_step": float(psnr(stepped, image))}


def score_both(gen, image) -> dict:
    """At the network's own N, and at the paper's Kodak count scaled to the image's area (equal N for all)."""
    scaled = scaled_count(*image.shape[1:])
    return {"own": score(gen, image), "scaled": score(gen, image, scaled)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", nargs="+", default=["shipped"],
                   help="generator .safetensors files ('shipped': the package's); the first is the baseline")
    p.add_argument("--skip", type=int, default=10, help="val images (sorted) that training validated on")
    p.add_argument("--count", type=int, default=30, help="held-out val images to score")
    p.add_argument("--out", type=Path, default=Path("figures/generator_val.json"))
    args = p.parse_args(argv)

    import torch

    from gilab.generator import Generator
    from gilab.io import load_image
    from gilab.study.protocol import weights_fingerprint

    root = Path(os.environ.get("GILAB_DATA", "data")) / "train" / "bsds500" / "val"
    paths = sorted(root.glob("*.jpg"))[args.skip: args.skip + args.count]
    if len(paths) < args.count:
        print(f"{root}: found {len(paths)} of the {args.count} held-out val images (set GILAB_DATA)", file=sys.stderr)
        return 2
    for w in args.weights:
        if w != "shipped" and not Path(w).is_file():
            print(f"--weights {w}: no such file", file=sys.stderr)
            return 2
    gens = {w: Generator.from_pretrained(None if w == "shipped" else w).eval() for w in args.weights}
    rows = []
    for path in paths:
        image = load_image(path)
        with torch.no_grad():
            row = {"image": path.name} | {w: score_both(gen, image) for w, gen in gens.items()}
        rows.append(row)
        print(path.name, "  ".join(f"{Path(w).stem}: N {r['own']['n']} {r['own']['psnr_fields']:.2f} / "
                                   f"{r['own']['psnr_colour_step']:.2f} dB, at N {r['scaled']['n']} "
                                   f"{r['scaled']['psnr_fields']:.2f} / {r['scaled']['psnr_colour_step']:.2f} dB"
                                   for w, r in row.items() if w != "image"), flush=True)

    base = args.weights[0]
    summary = {}
    for w in args.weights:
        summary[w] = {}
        for count in ("own", "scaled"):
            s = {k: statistics.fmean(r[w][count][k] for r in rows) for k in ("n", "psnr_fields", "psnr_colour_step")}
            for k in ("psnr_fields", "psnr_colour_step"):
                deltas = [r[w][count][k] - r[base][count][k] for r in rows]
                s[f"{k}_minus_first"] = statistics.fmean(deltas)
                s[f"{k}_images_better"] = sum(d > 0 for d in deltas)
            summary[w][count] = s
    from gilab.machine import cpu_name  # here, not at the top: gilab loads numba and torch
    out = {"benchmark": "generator weights on held-out BSDS500 val (the model choice)",
           "images": [r["image"] for r in rows], "skip": args.skip, "weights": args.weights,
           "weights_sha256": {w: weights_fingerprint(None if w == "shipped" else w) for w in args.weights},
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(),
                       "torch": torch.__version__},
           "summary": summary, "per_image": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for w, counts in summary.items():
        for count, s in counts.items():
            print(f"{w}, {count} N: N {s['n']:.0f}, fields {s['psnr_fields']:.2f} dB ({s['psnr_fields_minus_first']:+.2f}, "
                  f"better on {s['psnr_fields_images_better']}/{len(rows)}), with the colour step "
                  f"{s['psnr_colour_step']:.2f} dB ({s['psnr_colour_step_minus_first']:+.2f}, better on "
                  f"{s['psnr_colour_step_images_better']}/{len(rows)})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
