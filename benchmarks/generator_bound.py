"""What limits the generator's start: its placement, or the colours its fields give each Gaussian?

    python benchmarks/generator_bound.py [--weights PATH] [--target-count 42858] [--limit K]
                                         [--out figures/generator_bound.json]

Keep the generator's Gaussians (means, covariances) for each Kodak image and replace only their colours by the
best possible ones. Sum blending is linear in the colours, so "best" is a linear least-squares problem,
solved by CGLS (conjugate gradients on the normal equations) with the renderer as the operator: one forward
render and one backward pass per iteration. Two bounds per image:

- ``free``: any colour (3 values) per Gaussian;
- ``factor``: the fields' own degree of freedom, one scalar per Gaussian on the net's colour (Instant-GI's
  opacity field multiplies the RGB sampled at the mean by a factor, docs/method.md, section 4.7).

and ``factor_few``: only the first ``--few`` CGLS steps on the factors, with their time (how far a cheap,
exact colour fix would go), and ``colour_step``: the generator's own one ISRA step on the factors
(``gilab/generator/colour_step.py``), which the shipped weights apply after the fields.

If the bounds sit far above the net's PSNR, the placement is good enough and the fields are what fall short.
A diagnostic, not a feature: solving takes seconds per image, the network alone a fraction of one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def cgls(forward, adjoint, x, target, iters):
    """Least squares min_x |forward(x) - target|^2 by CGLS, from x; forward linear, adjoint its transpose."""
    r = target - forward(x)
    s = adjoint(r)
    p, gamma = s.clone(), (s * s).sum()
    for _ in range(iters):
        q = forward(p)
        alpha = gamma / (q * q).sum().clamp(min=1e-30)
        x, r = x + alpha * p, r - alpha * q
        s = adjoint(r)
        gamma_new = (s * s).sum()
        p, gamma = s + gamma_new / gamma.clamp(min=1e-30) * p, gamma_new
    return x


def bounds(g, image, iters, few=3):
    """PSNR of the net's colours, after its colour step, of the best free colours, of the best per-Gaussian
    factor and of ``few`` least-squares steps on the factors (with ``few_seconds``, their time).

    g: Gaussians2D as the generator's fields made them, before the colour step (sum blending); image: (3, H, W)
    float in [0, 1], the target;
    iters: CGLS iterations for the two bounds. Only the colours change; means and covariances stay the net's.
    """
    import time

    import torch

    import gilab
    from gilab.generator.colour_step import colour_step_ratio
    from gilab.metrics import psnr

    height, width = image.shape[-2:]
    means, conics, opacities = g.means.detach(), g.conics().detach(), g.opacities.detach()
    colors = g.colors.detach()

    def draw(c):  # (N, 3) colours -> (3, H, W)
        return gilab.render.rasterize(means, conics, c, opacities, height, width, blend="sum")

    def adjoint_of(make_colors, shape):
        def adjoint(residual):  # the gradient of <draw(make_colors(x)), residual> w.r.t. x: the transpose
            x = torch.zeros(shape, requires_grad=True)
            (draw(make_colors(x)) * residual).sum().backward()
            return x.grad
        return adjoint

    free = cgls(draw, adjoint_of(lambda c: c, colors.shape), colors.clone(), image, iters)
    scale = lambda a: a * colors
    solve = lambda steps: cgls(lambda a: draw(scale(a)), adjoint_of(scale, (len(g), 1)),
                               torch.ones(len(g), 1), image, steps)
    factor = solve(iters)
    tic = time.perf_counter()
    factor_few = solve(few)
    seconds = time.perf_counter() - tic
    step = colour_step_ratio(means, conics, colors, opacities, image)[:, None]
    with torch.no_grad():
        out = {name: float(psnr(draw(c).clamp(0, 1), image)) for name, c in
               (("net", colors), ("colour_step", step * colors), ("free", free), ("factor", scale(factor)),
                ("factor_few", scale(factor_few)))}
    return {**out, "few_seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=None, help="generator .safetensors (default: the shipped one)")
    p.add_argument("--target-count", type=int, default=42_858, help="N asked of the generator (the reference's)")
    p.add_argument("--iters", type=int, default=60, help="CGLS iterations per bound")
    p.add_argument("--few", type=int, default=3, help="CGLS steps for the cheap fix (factor_few)")
    p.add_argument("--limit", type=int, default=None, help="only the first K images (a quick look)")
    p.add_argument("--out", type=Path, default=Path("figures/generator_bound.json"))
    args = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    from gilab.datasets import kodak
    from gilab.errors import DataError
    from gilab.generator import Generator
    from gilab.io import load_image

    try:
        paths = kodak()[: args.limit]  # the 24 images, each checked against its sha256
    except DataError as error:
        print(error, file=sys.stderr)  # says where it looked and how to download
        return 2
    gen = Generator.from_pretrained(args.weights)
    rows = []
    for path in tqdm(paths, desc="images", unit="image"):
        image = load_image(path)
        g = gen(image, target_count=args.target_count, colour_step=False)
        rows.append({"image": path.name, "n": len(g), **bounds(g, image, args.iters, args.few)})
        r = rows[-1]
        tqdm.write(f"{path.name}: N {len(g)}  net {r['net']:.2f}  colour step {r['colour_step']:.2f}  "
                   f"{args.few} CGLS steps {r['factor_few']:.2f}  "
                   f"best factor {r['factor']:.2f}  best colours {r['free']:.2f} dB")
    mean = {k: statistics.fmean(r[k] for r in rows) for k in ("n", "net", "colour_step", "factor_few", "few_seconds",
                                                                "factor", "free")}
    from gilab.study.protocol import weights_fingerprint

    result = {"weights": str(args.weights or "shipped"), "weights_sha256": weights_fingerprint(args.weights), "target_count": args.target_count,
              "cgls_iters": args.iters, "few_steps": args.few, "threads": torch.get_num_threads(),
              "images": rows, "mean": mean}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(rows)} images, mean N {mean['n']:,.0f}: net {mean['net']:.2f} dB, after its colour step "
          f"{mean['colour_step']:.2f} dB; with the same Gaussians, the "
          f"best per-Gaussian factor {mean['factor']:.2f} dB, the best free colours {mean['free']:.2f} dB; "
          f"{args.few} least-squares steps on the factors {mean['factor_few']:.2f} dB in {mean['few_seconds']:.2f} s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
