"""The ``gilab`` command line: ``gilab fit``, ``gilab render``, ``gilab demo``, ``gilab download``.

User mistakes (a bad image, a missing file, an impossible option) end with one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import GilabError

DEMO_OUT = Path("out/demo")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except (GilabError, FileNotFoundError, MemoryError) as exc:
        print(f"gilab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gilab {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gilab", description="2D-Gaussian image representations "
                                     "(GaussianImage, Instant GaussianImage).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("fit", help="fit Gaussians to an image", description="Fit 2D Gaussians to IMAGE and write "
                       "the render, the Gaussians, the history and plots into --out.")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    _add_fit_options(p)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: out/<image name>)")
    p.set_defaults(run=run_fit)

    p = sub.add_parser("render", help="render a Gaussians file to PNG",
                       description="Render a .safetensors file written by `gilab fit` to a PNG, at any scale.")
    p.add_argument("gaussians", type=Path, help="Gaussians file (.safetensors)")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--scale", type=float, default=1.0, help="resolution factor (2 = twice the width and height)")
    p.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="canvas size if the file has none")
    p.add_argument("--blend", choices=["sum", "alpha"], default="sum")
    p.add_argument("--backend", default="auto", help="auto, dense, torch, cpu or gsplat")
    p.set_defaults(run=run_render)

    p = sub.add_parser("demo", help="fit the embedded default photograph (no download)",
                       description="Fit Gaussians to the photograph of Grace Hopper that ships with matplotlib "
                       "and write everything into out/demo/.")
    _add_fit_options(p, n=20_000, iters=500, init="net")
    p.add_argument("--out", type=Path, default=DEMO_OUT, help="output folder (default: out/demo)")
    p.set_defaults(run=run_demo)

    p = sub.add_parser("bench", help="the paper's time-to-quality study (net vs quad-tree vs random)",
                       description="For every image: the generator sets N, each start (net, quadtree, random) is "
                       "fine-tuned at that N, PSNR and MS-SSIM are logged against time. Resumable; shard with "
                       "--shard i/n. Then writes the tables and figures.")
    p.add_argument("--dataset", default="kodak", choices=["kodak", "div2k_valid_x2"])
    p.add_argument("--images", type=Path, default=None, help="a folder of images instead of --dataset")
    p.add_argument("--budgets", type=float, nargs="+", default=[2, 5, 10, 30, 60], help="seconds, init included")
    p.add_argument("--inits", nargs="+", default=["net", "quadtree", "random"], choices=["net", "quadtree", "random"])
    p.add_argument("--param", choices=["cholesky", "rs"], default="cholesky")
    p.add_argument("--limit", type=int, default=None, help="only the first LIMIT images")
    p.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th image from the i-th")
    p.add_argument("--out", type=Path, default=Path("out/study"), help="per-image results (resumable)")
    p.add_argument("--figures", type=Path, default=Path("figures/study"),
                   help="where tables, figures and a copy of the per-image results go")
    p.add_argument("--visual", nargs="*", default=["kodim05", "kodim23"], help="images for the visual grid")
    p.add_argument("--summary-only", action="store_true", help="only rebuild tables and figures from --out")
    p.set_defaults(run=run_bench)

    p = sub.add_parser("download", help="download and verify a dataset",
                       description="Download a dataset from its official site into GILAB_DATA (or --root) and "
                       "check every file's sha256.")
    p.add_argument("name", choices=["kodak", "bsds500", "div2k_valid_x2"])
    p.add_argument("--root", type=Path, default=None, help="data folder (default: $GILAB_DATA or a cache folder)")
    p.set_defaults(run=run_download)

    from .generator.data import add_cli as add_prepare_ppm
    from .generator.train import add_cli as add_train_generator

    add_prepare_ppm(sub)      # gilab prepare-ppm IMAGES... --out DIR [--iters N] [--shard i/n]
    add_train_generator(sub)  # gilab train-generator [--config run.json] | --export CKPT --to PATH
    return parser


def _add_fit_options(p, n=None, iters=None, init="random"):
    p.add_argument("--n", type=int, default=n, help="number of Gaussians (default: H*W/40 for random)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int, default=iters, help="iteration budget (default 1000)")
    budget.add_argument("--seconds", type=float, default=None, help="wall-clock budget, init included")
    p.add_argument("--init", default=init, choices=["random", "quadtree", "net"],
                   help=f"where the fit starts (default {init})")
    p.add_argument("--param", choices=["cholesky", "rs"], default="cholesky", help="covariance parametrisation")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", help="auto, dense, torch, cpu or gsplat")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# ------------------------------------------------------------------ commands
def run_fit(args, image=None, name=None) -> int:
    from . import io
    from .fitting import fit

    if image is None:
        image = io.load_image(args.image)
        name = Path(args.image).stem
    out = args.out if args.out is not None else Path("out") / name
    if args.n is not None and args.n < 1:
        raise GilabError(f"--n must be at least 1, got {args.n}")
    iters = args.iters if args.seconds is None else None  # --iters and --seconds exclude each other
    result = fit(image, init=args.init, n=args.n, iters=iters, seconds=args.seconds, param=args.param,
                 lr=args.lr, seed=args.seed, backend=args.backend, progress=not args.no_progress)
    write_fit_outputs(result, image, out)
    print(result.summary())
    print(f"wrote {out}/: render.png, gaussians.safetensors, history.csv, history.json, psnr.png, comparison.png")
    return 0


def write_fit_outputs(result, image, out: Path):
    """render.png, gaussians.safetensors, history.{csv,json}, psnr.png, comparison.png, summary.json."""
    from . import io
    from .plots.fitting import plot_history, side_by_side, use_headless_backend

    use_headless_backend()
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    io.save_image(result.image, out / "render.png")
    result.gaussians.save(out / "gaussians.safetensors")
    result.history.save(out / "history.csv")
    result.history.save(out / "history.json")
    ax = plot_history(result.history)
    ax.set_title(f"{len(result.gaussians):,} Gaussians, {result.iterations} iterations")
    ax.figure.savefig(out / "psnr.png", dpi=120)
    fig = side_by_side({"target": image, f"{len(result.gaussians):,} Gaussians, {result.psnr:.2f} dB": result.image})
    fig.savefig(out / "comparison.png", dpi=100)
    plt.close("all")
    summary = {"n": len(result.gaussians), "iterations": result.iterations, "seconds": result.seconds,
               "init_seconds": result.init_seconds, "iterations_per_second": result.iterations_per_second,
               "psnr_start": result.history.psnr[0], "psnr": result.psnr, "backend": result.backend,
               "param": result.param, "interrupted": result.interrupted}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def run_render(args) -> int:
    from . import io
    from .gaussians import Gaussians2D
    from .render import render

    try:
        gaussians = Gaussians2D.load(args.gaussians)
    except ValueError as exc:
        raise GilabError(str(exc)) from None
    size = tuple(args.size) if args.size else gaussians.size
    if size is None:
        raise GilabError(f"{args.gaussians}: the file records no canvas size; give --size HEIGHT WIDTH")
    if args.scale <= 0:
        raise GilabError(f"--scale must be positive, got {args.scale}")
    image = render(gaussians, size[0], size[1], blend=args.blend, backend=args.backend, scale=args.scale)
    io.save_image(image, args.out)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[2]} px)")
    return 0


def run_demo(args) -> int:
    from . import io

    return run_fit(args, image=io.default_image(), name="demo")


def run_bench(args) -> int:
    from . import datasets, reproduce

    if args.images is not None:
        images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    else:
        images = getattr(datasets, args.dataset)()
    images = images[:args.limit] if args.limit else images
    try:
        index, count = (int(v) for v in args.shard.split("/"))
        assert 0 <= index < count
    except (ValueError, AssertionError):
        raise GilabError(f"--shard must be i/n with 0 <= i < n, got {args.shard!r}") from None
    index, count = _distributed_shard(index, count)
    config = reproduce.StudyConfig(budgets=tuple(sorted(args.budgets)), inits=tuple(args.inits), param=args.param)
    if not args.summary_only:
        reproduce.run_study(images, args.out, config, shard=(index, count))
    if index == 0:
        visual = [v for v in args.visual if any(p.stem == v for p in images)
                  and (args.out / "runs" / f"{v}.json").exists()]
        label = args.dataset if args.images is None else args.images.name
        for name, path in reproduce.summarise(args.out, args.figures, images, label, tuple(visual)).items():
            print(f"{name}: {path}")
    return 0


def _distributed_shard(index: int, count: int) -> tuple[int, int]:
    """Under torchrun, each rank takes its own shard (RANK of WORLD_SIZE) of the shard given."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        rank = int(os.environ.get("RANK", "0"))
        return index * world + rank, count * world
    return index, count


def run_download(args) -> int:
    from . import datasets

    paths = datasets.download(args.name, root=args.root)
    print(f"{args.name}: {len(paths)} files verified in {Path(paths[0]).parent if paths else args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
