"""The ``gilab`` command line: fit, render, demo, study, download, compress, decompress, prepare-ppm, train-generator.

User mistakes (a bad image, a missing file, an impossible option, a damaged file) end with one line on
stderr and exit status 2, never a traceback, and are caught before long work starts. This is the only module
that parses arguments; each command is a short function over the package's API.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .errors import GilabError
from .files import IMAGE_SUFFIXES, distributed_shard, list_images, parse_shard, write_atomic

DEMO_OUT = Path("out/demo")
BACKEND_CHOICES = ["auto", "dense", "torch", "cpu", "gsplat", "triton"]
CHECKPOINT_EVERY = 120.0  # seconds between the saved states of `gilab fit --checkpoint`


def main(argv: list[str] | None = None) -> int:
    command = "gilab"
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help (0), or a usage mistake already printed as one line (2)
            return exc.code if isinstance(exc.code, int) else 2
        if not hasattr(args, "run"):
            parser.print_help()
            return 2
        command = f"gilab {args.command}"
        return args.run(args) or 0
    except (GilabError, FileNotFoundError, MemoryError) as exc:
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (``gilab fit: error: ...``) and exit 2, like every other."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gilab", description="2D-Gaussian image representations "
                                     "(GaussianImage, Instant GaussianImage).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

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
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES)
    p.set_defaults(run=run_render)

    p = sub.add_parser("demo", help="fit the embedded default photograph (no download)",
                       description="Fit Gaussians to the photograph of Grace Hopper that ships with matplotlib "
                       "and write everything into out/demo/.")
    _add_fit_options(p, n=20_000, iters=500, init="net")
    p.add_argument("--out", type=Path, default=DEMO_OUT, help="output folder (default: out/demo)")
    p.set_defaults(run=run_demo)

    p = sub.add_parser("study", aliases=["bench"], help="the paper's claim measured: net vs quad-tree vs random",
                       description="For every image: the generator sets N, each start (net, quadtree, random) is "
                       "fine-tuned at that N with one recipe (--param), and PSNR and MS-SSIM are logged against "
                       "time (--budgets) or iterations (--iters K). Resumable (results are keyed by the whole "
                       "configuration: another one needs another --out); shard with --shard i/n. Then writes the "
                       "tables and figures. (`gilab bench` is the old name.)")
    p.add_argument("--dataset", default="kodak", choices=["kodak", "div2k_valid_x2"])
    p.add_argument("--images", type=Path, default=None, help="a folder of images instead of --dataset")
    p.add_argument("--budgets", type=float, nargs="+", default=[2, 5, 10, 30, 60], help="seconds, init included")
    p.add_argument("--slow-factor", type=float, default=1.0,
                   help="time mode: quadtree and random run this multiple of the largest budget, so that their "
                        "catching up is measured rather than bounded (default 1)")
    p.add_argument("--iters", type=int, default=None, metavar="K",
                   help="iteration mode: every start runs K iterations (budgets unused); speed-ups at milestones")
    p.add_argument("--inits", nargs="+", default=["net", "quadtree", "random"], choices=["net", "quadtree", "random"])
    p.add_argument("--param", choices=["cholesky", "rs"], default="cholesky",
                   help="the fine-tuning recipe: cholesky (GaussianImage) or rs (Instant-GI's code)")
    p.add_argument("--limit", type=int, default=None, help="only the first LIMIT images")
    p.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th image from the i-th")
    p.add_argument("--out", type=Path, default=Path("out/study"), help="per-image results (resumable)")
    p.add_argument("--figures", type=Path, default=Path("figures/study"),
                   help="where tables, figures and a copy of the per-image results go")
    p.add_argument("--visual", nargs="*", default=["kodim05", "kodim23"], help="images for the visual grid")
    p.add_argument("--summary-only", action="store_true", help="only rebuild tables and figures from --out")
    p.set_defaults(run=run_study)

    p = sub.add_parser("download", help="download and verify a dataset",
                       description="Download a dataset from its official site into GILAB_DATA (or --root) and "
                       "check every file's sha256.")
    p.add_argument("name", choices=["kodak", "bsds500", "div2k_valid_x2"])
    p.add_argument("--root", type=Path, default=None, help="data folder (default: $GILAB_DATA or a cache folder)")
    p.set_defaults(run=run_download)

    _add_codec(sub)
    _add_prepare_ppm(sub)
    _add_train_generator(sub)
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
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint", action="store_true",
                   help="keep the fit's state in OUT/fit.ckpt every two minutes; the same command continues from it")


# ------------------------------------------------------------------ commands
def run_fit(args, image=None, name=None) -> int:
    from . import io
    from .fitting import fit

    if image is None:
        image = io.load_image(args.image)
        name = Path(args.image).stem
    out = args.out if args.out is not None else Path("out") / name
    _check_output_folder(out)
    iters = args.iters if args.seconds is None else None  # --iters and --seconds exclude each other
    checkpoint = out / "fit.ckpt" if args.checkpoint else None
    result = fit(image, init=args.init, n=args.n, iters=iters, seconds=args.seconds, param=args.param,
                 lr=args.lr, seed=args.seed, backend=args.backend, progress=not args.no_progress,
                 checkpoint=checkpoint, checkpoint_every=CHECKPOINT_EVERY)
    write_fit_outputs(result, image, out)
    print(result.summary())
    if result.interrupted and checkpoint is not None and checkpoint.exists():
        print(f"gilab {args.command}: interrupted; the same command continues from {checkpoint}", file=sys.stderr)
    if result.diverged:
        print(f"gilab {args.command}: warning: the loss turned non-finite; the outputs hold the last finite step "
              "(try a smaller --lr)", file=sys.stderr)
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
               "param": result.param, "interrupted": result.interrupted, "diverged": result.diverged,
               "fused": result.fused}
    write_atomic(out / "summary.json", json.dumps(summary, indent=2))


def run_render(args) -> int:
    from . import io
    from .gaussians import Gaussians2D
    from .render import render

    if args.out.is_dir():
        raise GilabError(f"--out {args.out} is a folder; give the PNG's file name")
    gaussians = Gaussians2D.load(args.gaussians)
    size = tuple(args.size) if args.size else gaussians.size
    if size is None:
        raise GilabError(f"{args.gaussians}: the file records no canvas size; give --size HEIGHT WIDTH")
    image = render(gaussians, size[0], size[1], blend=args.blend, backend=args.backend, scale=args.scale)
    io.save_image(image, args.out)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[2]} px)")
    return 0


def _check_output_folder(out: Path):
    """Refuse, before any work, an output folder that is a file or sits under one."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise GilabError(f"--out {out}: {parent} is a file, not a folder")
            return


def run_demo(args) -> int:
    from . import io

    return run_fit(args, image=io.default_image(), name="demo")


def run_study(args) -> int:
    from . import datasets
    from .study import StudyConfig, run_study, summarise

    if any(not (math.isfinite(b) and b > 0) for b in args.budgets):
        raise GilabError(f"--budgets must be positive seconds, got {' '.join(f'{b:g}' for b in args.budgets)}")
    if not (math.isfinite(args.slow_factor) and args.slow_factor >= 1):
        raise GilabError(f"--slow-factor must be at least 1, got {args.slow_factor:g}")
    if args.iters is not None and args.iters < 1:
        raise GilabError(f"--iters must be at least 1, got {args.iters}")
    if args.limit is not None and args.limit < 1:
        raise GilabError(f"--limit must be at least 1, got {args.limit}")
    images = list_images(args.images) if args.images is not None else getattr(datasets, args.dataset)()
    if not images:
        raise GilabError(f"{args.images}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    images = images[:args.limit] if args.limit else images
    index, count = distributed_shard(*parse_shard(args.shard))
    config = StudyConfig(budgets=tuple(sorted(args.budgets)), inits=tuple(args.inits), param=args.param,
                         slow_factor=args.slow_factor, iterations=args.iters)
    if not args.summary_only:
        run_study(images, args.out, config, shard=(index, count))
    if index == 0:
        visual = [v for v in args.visual if any(p.stem == v for p in images)
                  and (args.out / "runs" / f"{v}.json").exists()]
        label = args.dataset if args.images is None else args.images.name
        for name, path in summarise(args.out, args.figures, images, label, tuple(visual)).items():
            print(f"{name}: {path}")
    return 0


def run_download(args) -> int:
    from . import datasets

    paths = datasets.download(args.name, root=args.root)
    print(f"{args.name}: {len(paths)} files verified in {Path(paths[0]).parent if paths else args.root}")
    return 0


# ------------------------------------------------------------------ compression
def _add_codec(sub):
    p = sub.add_parser("compress", help="compress an image into a .gic file of quantised Gaussians",
                       description="Fit Gaussians to IMAGE at a target rate, quantise them (quantisation-aware "
                       "fine-tuning), entropy-code them into a .gic file, and report bpp, PSNR, MS-SSIM and time.")
    p.add_argument("image", help="image file (PNG, JPEG, ...)")
    p.add_argument("--bpp", type=float, default=None, help="target bits per pixel (default 0.3 unless --n)")
    p.add_argument("--n", type=int, default=None, help="number of Gaussians instead of a target rate")
    p.add_argument("--bits", type=int, nargs=2, metavar=("POSITION", "COVARIANCE"), default=[12, 6],
                   help="bits per position axis and per Cholesky factor (default 12 6)")
    p.add_argument("--rvq", type=int, nargs=2, metavar=("STAGES", "SIZE"), default=[2, 64],
                   help="colour residual VQ: stages and codewords per stage (default 2 64)")
    p.add_argument("--init", choices=["net", "random", "net-zoom"], default="net",
                   help="where the fit starts (default net; net-zoom: the network sees a downscaled image)")
    p.add_argument("--iters", type=int, default=None, help="iteration budget (default 1000)")
    p.add_argument("--seconds", type=float, default=None, help="or a wall-clock budget, everything included")
    p.add_argument("--lr", type=float, default=1e-2,
                   help="Adan's rate for the float fit (the quantisation-aware phase starts at 1e-3 and falls to 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES)
    p.add_argument("-o", "--out", type=Path, default=None, help="output file (default: <image name>.gic)")
    p.set_defaults(run=run_compress)

    p = sub.add_parser("decompress", help="decode a .gic file to PNG, at any scale",
                       description="Decode a .gic file written by `gilab compress` and render it to a PNG.")
    p.add_argument("file", type=Path, help="compressed file (.gic)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output PNG")
    p.add_argument("--scale", type=float, default=1.0, help="resolution factor (2 = twice the width and height)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES)
    p.set_defaults(run=run_decompress)


def run_compress(args) -> int:
    from . import io
    from .codec import CodecSettings, compress

    if args.bpp is not None and args.n is not None:
        raise GilabError("give --bpp or --n, not both")
    if args.iters is not None and args.seconds is not None:
        raise GilabError("give --iters or --seconds, not both")
    out = args.out if args.out is not None else Path(Path(args.image).stem + ".gic")
    _check_output_file(out)
    image = io.load_image(args.image)
    settings = CodecSettings(*args.bits, *args.rvq)
    bpp = 0.3 if args.bpp is None and args.n is None else args.bpp
    result = compress(image, bpp=bpp, n=args.n, init=args.init, seconds=args.seconds, iters=args.iters,
                      settings=settings, lr=args.lr, seed=args.seed, backend=args.backend)
    result.save(out)
    print(result.summary())
    print(f"wrote {out} ({len(result.data):,} bytes, {result.bpp:.4f} bpp, PSNR {result.psnr:.2f} dB, "
          f"MS-SSIM {result.ms_ssim:.4f}, {result.seconds:.1f} s)")
    return 0


def run_decompress(args) -> int:
    from . import io
    from .codec import decompress

    _check_output_file(args.out)
    image = decompress(args.file, scale=args.scale, backend=args.backend)
    io.save_image(image, args.out)
    print(f"wrote {args.out} ({image.shape[2]}x{image.shape[1]} px)")
    return 0


def _check_output_file(out: Path):
    """Refuse, before any work, an output file that is a folder or sits under a file."""
    if out.is_dir():
        raise GilabError(f"--out {out} is a folder; give a file name")
    _check_output_folder(out.parent)


# ------------------------------------------------------------ generator training
PREPARE_PPM = ("Compute and cache the pseudo-PPMs (the position field's training targets) of every image in "
               "the given folders: resumable, shardable across processes.")


def _add_prepare_ppm(sub):
    p = sub.add_parser("prepare-ppm", help="compute the generator's training targets (pseudo-PPMs)",
                       description=PREPARE_PPM)
    p.add_argument("images", type=Path, nargs="+", help="image folder(s), e.g. $GILAB_DATA/train/bsds500/train")
    p.add_argument("--out", type=Path, required=True, help="PPM cache folder (a subfolder per image folder)")
    p.add_argument("--iters", type=int, default=None,
                   help="GaussianImage iterations per image (default 2000, gilab.training.targets.FIT_ITERS, chosen "
                        "by benchmarks/ppm_fit_length.py; 0: the quad-tree's own map, no fit)")
    p.add_argument("--seconds", type=float, default=None, help="or a wall-clock budget per image")
    p.add_argument("--shard", default=None, help="i/n: this process does images i, i+n, ... "
                   "(default: the torchrun rank, or all)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="render backend of the fits")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_prepare_ppm)


def run_prepare_ppm(args) -> int:
    import torch

    from .training import prepare_ppm

    if (args.iters is not None and args.iters < 0) or (args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0)):
        raise GilabError("--iters must be >= 0 and --seconds a positive number")
    names = [folder.name for folder in args.images]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:  # <out>/<folder name> would be shared, and one folder's PPMs taken for the other's
        raise GilabError(f"two image folders are named {clash[0]!r}: their PPMs would share --out/{clash[0]}; "
                         "run prepare-ppm once per folder with its own --out")
    for folder in args.images:
        list_images(folder)  # every folder exists before any work starts
    if args.threads:
        torch.set_num_threads(args.threads)
    shard = parse_shard(args.shard)
    for folder in args.images:
        out = args.out / folder.name if len(args.images) > 1 else args.out
        length = {} if args.iters is None else {"iters": args.iters}  # None: prepare_ppm's default
        stats = prepare_ppm(folder, out, **length, seconds=args.seconds, shard=shard,
                            progress=not args.no_progress, backend=args.backend)
        print(f"{folder}: {stats['done']} written, {stats['skipped']} already there, "
              f"{stats['seconds']:.0f} s -> {out}", flush=True)
    return 0


def _add_train_generator(sub):
    from dataclasses import fields

    from .training.config import TrainConfig

    p = sub.add_parser("train-generator", help="train the generator network (CPU, GPUs, torchrun)",
                       description="Train the generator on images and their pseudo-PPMs (resumable: rerun the "
                       "same command), or --export a checkpoint as shippable weights. Under torchrun: "
                       "`torchrun --nproc_per_node 4 -m gilab.training ...` with the same flags.")
    p.add_argument("--config", type=Path, help="JSON file with TrainConfig fields (flags override it)")
    p.add_argument("--export", type=Path, metavar="CKPT", help="only export CKPT's model to --to, then exit")
    p.add_argument("--to", type=Path, help="safetensors path for --export")
    p.add_argument("--half", action="store_true", help="--export the weights as float16 (half the file size)")
    p.add_argument("--int8", action="store_true", help="--export large matrices as int8, the rest float16 (as shipped)")
    p.add_argument("--model", choices=["compact", "paper"], help="network size (default: compact)")
    p.add_argument("--angle", choices=["offset", "sigmoid"], default=None,
                   help="the Sigma field's angle: offset (default; any orientation from any triangle) or sigmoid "
                        "(the paper's form, as the weights shipped so far were trained)")
    p.add_argument("--colour-step", action="store_true",
                   help="the model rescales its colours by one ISRA step after the fields: --export with it on "
                        "(as shipped), or train through it (that made the start worse: gilab/weights/MODEL_CARD.md)")
    p.add_argument("--no-progress", action="store_true")
    for f in fields(TrainConfig):
        if f.name == "model":
            continue
        t = str(f.type)  # "int", "float | None", "str | None", "bool", ... (annotations are strings here)
        flag, text = "--" + f.name.replace("_", "-"), f.metadata.get("help", "").replace("%", "%%")
        if t == "bool":
            p.add_argument(flag, action="store_true", default=None, help=text)
            continue
        kind = float if "float" in t else int if "int" in t else str
        default = "" if f.default is None else f" (default: {f.default})"
        p.add_argument(flag, type=kind, default=None, help=text + default)
    p.set_defaults(run=run_train_generator)


def run_train_generator(args) -> int:
    from .training import export, train

    if args.export:
        if not args.to:
            raise GilabError("--export needs --to PATH (where the safetensors weights go)")
        print(export(args.export, args.to, half=args.half, int8=args.int8, colour_step=args.colour_step or None))
        return 0
    cfg = _train_config(args)
    if cfg.batch_size < 1 or cfg.epochs < 1 or cfg.crop < 1 or not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise GilabError("--batch-size, --epochs and --crop must be at least 1, and --lr a positive number")
    if cfg.init_from and not Path(cfg.init_from).is_file():
        raise GilabError(f"--init-from {cfg.init_from}: no such file")
    train(cfg, progress=not args.no_progress)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def _train_config(args):
    from dataclasses import fields

    from .generator import GeneratorConfig
    from .training.config import TrainConfig

    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    for f in fields(TrainConfig):
        v = getattr(args, f.name, None)
        if f.name != "model" and v is not None:
            setattr(cfg, f.name, v)
    if args.model == "paper":
        cfg.model = GeneratorConfig.paper()
    if args.colour_step:
        cfg.model.colour_step = True
    if args.angle:
        cfg.model.angle = args.angle
    return cfg


if __name__ == "__main__":
    sys.exit(main())
