"""Train the generator (DESIGN.md 4.8) on one CPU, or on many processes/GPUs with torchrun (DDP).

    python -m gilab.generator.train --config run.json                  # one process
    python -m gilab.generator.train --out runs/g --batch-size 4 --epochs 30
    torchrun --nproc_per_node 4 -m gilab.generator.train --config run.json   # gloo on CPU, nccl on GPU
    python -m gilab.generator.train --export runs/g/best.pt --to gilab/weights/generator.safetensors

Loss = L_ppm + L_rec + L_scale:
  L_ppm   focal MSE (1 - e^-|e|)^2 e^2 between the predicted PPM and the pseudo-PPM,
  L_rec   0.7 weighted MSE + 0.3 weighted (1 - SSIM) of the clamped sum-blend render, weight =
          clamp(1 / (pseudo-PPM + 0.01), 1, 10): flat regions get few Gaussians, so their errors count more,
  L_scale 10 mean(relu(0.5 - scale)): no Gaussian thinner than half a pixel.
Adam, cosine decay lr -> lr_min over all steps. The CNN runs on the whole batch; placement (each crop gets its
own triangulation) and rendering loop over it. Each process checkpoints nothing but rank 0 writes
``<out>/last.pt`` (and ``best.pt`` on the best validation PSNR) with model, optimizer, scheduler, position in
the epoch and RNG state: rerunning the same command resumes. ``<out>/log.jsonl`` and ``<out>/curves.png`` hold
the curves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import fields as dc_fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..render import rasterize
from .config import GeneratorConfig, TrainConfig
from .data import CropDataset, bsds_root, load_pairs
from .generator import Generator


# --------------------------------------------------------------------- losses
def focal_mse(pred: Tensor, target: Tensor) -> Tensor:
    """mean((1 - exp(-|e|))^2 e^2), e = pred - target: small errors are damped (they are mostly the
    pseudo-PPM's own noise), large ones count."""
    e = pred - target
    return ((1 - torch.exp(-e.abs())) ** 2 * e * e).mean()


def _gauss_window(size: int = 11, sigma: float = 1.5, device=None) -> Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> Tensor:
    """Per-pixel SSIM (Wang et al. 2004; 11-tap Gaussian, sigma 1.5, data range 1) of (3, H, W) images,
    averaged over channels: (H - 10, W - 10) ("valid" windows, as pytorch_msssim)."""
    g = _gauss_window(device=a.device)
    x = torch.stack([a, b, a * a, b * b, a * b]).flatten(0, 1)[:, None]       # (15, 1, H, W)
    x = F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    x = x.view(5, 3, *x.shape[-2:])
    mu_a, mu_b, aa, bb, ab = x
    va, vb, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return s.mean(0)


def reconstruction_loss(render: Tensor, target: Tensor, ppm: Tensor) -> Tensor:
    """0.7 weighted MSE + 0.3 weighted (1 - SSIM); render, target (3, H, W), ppm (H, W) the pseudo-PPM."""
    w = torch.clamp(1 / (ppm + 0.01), 1, 10)
    mse = (w * ((render - target) ** 2).mean(0)).mean()
    s = ssim_map(render, target)
    pad = (w.shape[0] - s.shape[0]) // 2
    wssim = (w[pad:pad + s.shape[0], pad:pad + s.shape[1]] * (1 - s)).mean()
    return 0.7 * mse + 0.3 * wssim


class GeneratorLoss(nn.Module):
    """The training forward pass as one module, so that DistributedDataParallel can wrap it."""

    def __init__(self, generator: Generator, cfg: TrainConfig):
        super().__init__()
        self.generator, self.cfg = generator, cfg

    def forward(self, images: Tensor, ppm_targets: Tensor) -> dict[str, Tensor]:
        """images (B, 3, c, c) in [0, 1], ppm_targets (B, c, c) -> {"loss", "ppm", "rec", "scale", "psnr", "n"}
        (the three terms keep their graphs, so that each can be studied alone)."""
        gen, cfg = self.generator, self.cfg
        features, padded, ppm = gen.predict(images)
        l_ppm = focal_mse(ppm, ppm_targets)
        rec, scales, mse, counts = [], [], [], []
        h, w = images.shape[-2:]
        for b in range(images.shape[0]):
            source = ppm[b] if cfg.place_from == "pred" else ppm_targets[b]
            mesh = gen.mesh(source, cfg.kernel_size, cfg.density)
            out = gen.build(features[b], padded[b], mesh, (h, w))
            g = out.gaussians
            render = rasterize(g.means, g.conics(), g.colors, g.opacities, h, w, "sum", cfg.backend).clamp(0, 1)
            rec.append(reconstruction_loss(render, images[b], ppm_targets[b]))
            scales.append(out.scales.flatten())
            mse.append(((render - images[b]) ** 2).mean().detach())
            counts.append(len(g))
        l_rec = torch.stack(rec).mean()
        l_scale = 10 * F.relu(0.5 - torch.cat(scales)).mean()
        psnr = (-10 * torch.log10(torch.stack(mse).clamp(min=1e-10))).mean()
        return {"loss": l_ppm + l_rec + l_scale, "ppm": l_ppm, "rec": l_rec, "scale": l_scale, "psnr": psnr,
                "n": torch.tensor(float(sum(counts)) / len(counts))}


# ------------------------------------------------------------------ validation
@torch.no_grad()
def validate(generator: Generator, pairs, kernel_size: int = 3, density: float = 1.0, backend: str = "auto",
             rank: int = 0, world: int = 1) -> dict[str, float]:
    """Mean PSNR (dB) and N of the network's Gaussians (no fine-tuning) on full images, split across ranks."""
    generator.eval()
    device = next(generator.parameters()).device
    total = torch.zeros(3, dtype=torch.float64, device=device)  # psnr sum, n sum, count
    for image, _ in pairs[rank::world]:
        x = image.float().to(device) / 255
        g = generator(x, kernel_size=kernel_size, density=density)
        h, w = x.shape[-2:]
        r = rasterize(g.means, g.conics(), g.colors, g.opacities, h, w, "sum", backend).clamp(0, 1)
        mse = ((r - x) ** 2).mean().clamp(min=1e-10)
        total += torch.tensor([-10 * math.log10(mse.item()), len(g), 1], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(total)
    generator.train()
    count = max(total[2].item(), 1)
    return {"val_psnr": total[0].item() / count, "val_n": total[1].item() / count}


# ------------------------------------------------------------------ checkpoints
def save_checkpoint(path: Path, model: Generator, optimizer, scheduler, state: dict, cfg: TrainConfig):
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "state": state, "config": cfg.to_dict(), "rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save keeps the previous checkpoint


def load_checkpoint(path: Path) -> dict:
    # Our own files (they hold optimizer state and Python numbers); never load a checkpoint you did not write.
    return torch.load(path, map_location="cpu", weights_only=False)


def initial_weights(path: Path) -> dict:
    """The model state dict in a training checkpoint (.pt) or in shipped weights (.safetensors)."""
    if path.suffix == ".safetensors":
        return Generator.from_pretrained(path).state_dict()
    return load_checkpoint(path)["model"]


INT8_MIN_NUMEL = 16_384  # as shipped: smaller tensors (norms, biases, the small heads) stay float16


def export(checkpoint: str | Path, to: str | Path, half: bool = False, int8: bool = False,
           colour_step: bool | None = None, **metadata) -> Path:
    """Write a checkpoint's model as a shippable safetensors file (config in the metadata; ``half``: float16;
    ``int8``: float16, and matrices and kernels of 16,384 or more entries as int8 with per-channel scales;
    ``colour_step``: switch the ISRA colour step on or off in the exported config, default: as trained)."""
    ckpt = load_checkpoint(Path(checkpoint))
    cfg = TrainConfig.from_dict(ckpt["config"])
    if colour_step is not None:
        cfg.model.colour_step = colour_step
    model = Generator(cfg.model)
    model.load_state_dict(ckpt["model"])
    st = ckpt["state"]
    meta = {"step": st.get("step"), "epoch": st.get("epoch"), "val_psnr": st.get("val_psnr"),
            "val_n": st.get("val_n"), **metadata}
    return model.save_pretrained(to, dtype=torch.float16 if half or int8 else None,
                                 int8_min_numel=INT8_MIN_NUMEL if int8 else None,
                                 **{k: v for k, v in meta.items() if v is not None})


# ------------------------------------------------------------------ the loop
def cosine_schedule(total_steps: int, lr: float, lr_min: float):
    """The LR factor at a step: cosine from lr to lr_min over ``total_steps``, then flat. A closed form (not
    PyTorch's recursive CosineAnnealingLR), so a resumed run may change ``epochs`` and the curve re-targets."""
    def factor(step: int) -> float:
        t = min(step, total_steps) / max(total_steps, 1)
        return (lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))) / lr

    return factor


def _schedule_at(scheduler, step: int):
    """Put a LambdaLR (and its optimizer) at ``step``."""
    scheduler.last_epoch = step
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(step)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1): nccl with one GPU per rank, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    return rank, world, device


def _batches(n_items: int, batch: int, epoch: int, seed: int, rank: int, world: int) -> list[list[int]]:
    """This rank's batches for ``epoch``: one permutation shared by every rank (seeded by the epoch), split
    round-robin, cut into full batches. Deterministic, so a resumed run can skip the batches it has done."""
    perm = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    per_rank = len(perm) // world
    mine = perm[rank::world][:per_rank]
    return [mine[i:i + batch] for i in range(0, len(mine) - batch + 1, batch)]


def train(cfg: TrainConfig, progress: bool = True) -> Generator:
    """Run (or resume) training as ``cfg`` says; returns the trained generator (rank 0's copy on every rank)."""
    from tqdm.auto import tqdm

    rank, world, device = setup_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cfg.data) if cfg.data else bsds_root()
    ppm_dir = Path(cfg.ppm_dir) if cfg.ppm_dir else out.parent / "ppm"
    train_set = CropDataset(load_pairs(root / "train", ppm_dir / "train"), cfg.crop)
    val_pairs = load_pairs(root / "val", ppm_dir / "val", limit=cfg.val_images or None)

    torch.manual_seed(cfg.seed + rank)  # different crops per rank; the model init is broadcast by DDP
    model = Generator(cfg.model).to(device)
    loss_fn = GeneratorLoss(model, cfg)
    if world > 1:
        loss_fn = nn.parallel.DistributedDataParallel(loss_fn, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
    steps_per_epoch = len(_batches(len(train_set), cfg.batch_size, 0, cfg.seed, rank, world))
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} images cannot fill one batch of {cfg.batch_size} on {world} ranks")
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total_steps, cfg.lr, cfg.lr_min))
    state = {"epoch": 0, "batch": 0, "step": 0, "seconds": 0.0, "best_val_psnr": -math.inf}
    last = out / "last.pt"
    if last.exists():
        ckpt = load_checkpoint(last)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        _schedule_at(scheduler, state["step"])  # closed form: no scheduler state needed
        torch.set_rng_state(ckpt["rng"])
        torch.manual_seed(int(torch.randint(0, 2 ** 31, ())) + rank)  # resume the stream, still per rank
        if rank == 0:
            print(f"resuming from {last}: epoch {state['epoch']}, step {state['step']}", flush=True)
            _truncate_log(out / "log.jsonl", state["step"])
    elif cfg.init_from:  # a new stage on top of earlier weights: fresh optimizer and schedule, step 0
        model.load_state_dict(initial_weights(Path(cfg.init_from)))
        if rank == 0:
            print(f"starting from the weights in {cfg.init_from}", flush=True)
    if rank == 0:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log = open(out / "log.jsonl", "a") if rank == 0 else None  # noqa: SIM115 (open for the whole run)
    start = time.perf_counter() - state["seconds"]
    last_ckpt = time.perf_counter()
    bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="step", disable=not progress or rank)
    stop = False

    def checkpoint(path=last):
        state["seconds"] = time.perf_counter() - start
        if rank == 0:
            save_checkpoint(path, model, optimizer, scheduler, state, cfg)

    while state["epoch"] < cfg.epochs and not stop:
        batches = _batches(len(train_set), cfg.batch_size, state["epoch"], cfg.seed, rank, world)
        for batch in batches[state["batch"]:]:
            items = [train_set[i] for i in batch]
            images = torch.stack([x for x, _ in items]).to(device)
            targets = torch.stack([p for _, p in items]).to(device)
            losses = loss_fn(images, targets)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            # A rare bad crop (a thin sliver, an outlier PPM) gives a 10x gradient; clipping keeps Adam's step sane.
            norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            state["batch"] += 1
            bar.update(1)
            if rank == 0:
                row = {k: round(float(v.detach()), 6) for k, v in losses.items()}
                row.update(step=state["step"], epoch=state["epoch"], lr=scheduler.get_last_lr()[0], grad_norm=float(norm),
                           seconds=round(time.perf_counter() - start, 1))
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.2f}", n=int(row["n"]))
            elapsed_min = (time.perf_counter() - start) / 60
            stop = (cfg.max_steps is not None and state["step"] >= cfg.max_steps) or \
                   (cfg.max_minutes is not None and elapsed_min >= cfg.max_minutes)
            stop = _agree(stop, world, device)  # every rank stops at the same step
            if stop:
                break
            if (time.perf_counter() - last_ckpt) / 60 >= cfg.ckpt_every_minutes:
                checkpoint()
                last_ckpt = time.perf_counter()
        if not stop:
            state["epoch"] += 1
            state["batch"] = 0
            if cfg.val_every and state["epoch"] % cfg.val_every == 0 and val_pairs:
                val = validate(model, val_pairs, cfg.kernel_size, cfg.density, cfg.backend, rank, world)
                state.update(val)  # the latest validation: what an export of this checkpoint reports
                if rank == 0:
                    log.write(json.dumps({"step": state["step"], "epoch": state["epoch"], **val,
                                          "seconds": round(time.perf_counter() - start, 1)}) + "\n")
                    log.flush()
                    print(f"epoch {state['epoch']} step {state['step']}: val PSNR {val['val_psnr']:.2f} dB, "
                          f"N {val['val_n']:.0f}", flush=True)
                    if val["val_psnr"] > state["best_val_psnr"]:
                        state["best_val_psnr"] = val["val_psnr"]
                        checkpoint(out / "best.pt")
                    plot_curves(out / "log.jsonl", out / "curves.png")
        checkpoint()
        last_ckpt = time.perf_counter()
    bar.close()
    if log:
        log.close()
        plot_curves(out / "log.jsonl", out / "curves.png")
    return model


def _truncate_log(path: Path, step: int):
    """Drop the log rows written after the checkpoint we resume from (they will be redone)."""
    if path.exists():
        rows = [r for r in path.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= step]
        path.write_text("".join(r + "\n" for r in rows))


def _agree(flag: bool, world: int, device) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def plot_curves(log_path: Path, png: Path, smooth: int = 25):
    """Training loss / PSNR per step (smoothed) and validation PSNR per epoch, from log.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "loss" in r]
    vals = [r for r in rows if "val_psnr" in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))

    def smoothed(values):
        out, acc = [], []
        for v in values:
            acc = (acc + [v])[-smooth:]
            out.append(sum(acc) / len(acc))
        return out

    if steps:
        x = [r["step"] for r in steps]
        axes[0].plot(x, smoothed([r["loss"] for r in steps]), label="total")
        axes[0].plot(x, smoothed([r["rec"] for r in steps]), label="L_rec")
        axes[0].plot(x, smoothed([r["ppm"] for r in steps]), label="L_ppm")
        axes[0].set_yscale("log")
        axes[0].legend()
        axes[1].plot(x, smoothed([r["psnr"] for r in steps]), label="train crops (smoothed)")
    if vals:
        axes[1].plot([r["step"] for r in vals], [r["val_psnr"] for r in vals], "o-", label="val, full images")
        axes[2].plot([r["step"] for r in vals], [r["val_n"] for r in vals], "o-")
    axes[0].set(title="loss", xlabel="step")
    axes[1].set(title="PSNR of the network's Gaussians (dB)", xlabel="step")
    axes[1].legend()
    axes[2].set(title="Gaussians per val image", xlabel="step")
    fig.tight_layout()
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)


# ------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--config", type=Path, help="JSON file with TrainConfig fields (flags override it)")
    p.add_argument("--export", type=Path, metavar="CKPT", help="only export CKPT's model to --to, then exit")
    p.add_argument("--to", type=Path, help="safetensors path for --export")
    p.add_argument("--half", action="store_true", help="--export the weights as float16 (half the file size)")
    p.add_argument("--int8", action="store_true", help="--export large matrices as int8, the rest float16 (as shipped)")
    p.add_argument("--model", choices=["compact", "paper"], help="network size (default: compact)")
    p.add_argument("--colour-step", action="store_true",
                   help="the model rescales its colours by one ISRA step after the fields: --export with it on "
                        "(as shipped), or train through it (that made the start worse: model card, stage 5)")
    p.add_argument("--no-progress", action="store_true")
    comments = _field_comments(TrainConfig)
    for f in dc_fields(TrainConfig):
        if f.name == "model":
            continue
        t = str(f.type)  # "int", "float | None", "str | None", ... (annotations are strings here)
        kind = float if "float" in t else int if "int" in t else str
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None,
                       help=comments.get(f.name, "") + ("" if f.default is None else f" (default: {f.default})"))


def _field_comments(cls) -> dict[str, str]:
    """``name: type = default  # comment`` lines of a dataclass's source -> {name: comment}: the flags' help,
    written once, beside the fields."""
    import inspect
    import re

    found = re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", inspect.getsource(cls), flags=re.MULTILINE)
    return {name: comment.replace("%", "%%") for name, comment in found}


def config_from_args(args) -> TrainConfig:
    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    for f in dc_fields(TrainConfig):
        v = getattr(args, f.name, None)
        if f.name != "model" and v is not None:
            setattr(cfg, f.name, v)
    if args.model == "paper":
        cfg.model = GeneratorConfig.paper()
    if args.colour_step:
        cfg.model.colour_step = True
    return cfg


def run(args) -> int:
    if args.export:
        if not args.to:
            raise SystemExit("--export needs --to PATH")
        print(export(args.export, args.to, half=args.half, int8=args.int8, colour_step=args.colour_step or None))
        return 0
    train(config_from_args(args), progress=not args.no_progress)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def add_cli(subparsers):
    """Register ``gilab train-generator`` on the ``gilab`` command's subparsers."""
    p = subparsers.add_parser("train-generator", help="train the generator network (CPU, GPUs, torchrun)",
                              description=__doc__.split("\n")[0])
    add_arguments(p)
    p.set_defaults(run=run)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m gilab.generator.train`` (what ``torchrun`` launches) is ``gilab train-generator``: same flags,
    and the same one-line errors instead of tracebacks."""
    import sys

    from ..cli import main as cli_main

    return cli_main(["train-generator", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
