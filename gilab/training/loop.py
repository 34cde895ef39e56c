"""Train the generator on one CPU, or on many processes/GPUs with torchrun (DDP).

    gilab train-generator --config run.json                       # one process
    torchrun --nproc_per_node 4 -m gilab.training --config run.json  # gloo on CPU, nccl on GPU

Adam, cosine decay lr -> lr_min over all steps. The CNN runs on the whole batch; placement (each crop gets its
own triangulation) and rendering loop over it. Only rank 0 writes ``<out>/last.pt`` (and ``best.pt`` on the
best validation PSNR) with model, optimizer, scheduler, position in the epoch and RNG state: rerunning the same
command resumes. ``<out>/log.jsonl`` and ``<out>/curves.png`` hold the curves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ArgumentError
from ..files import write_atomic
from ..generator import Generator
from ..metrics import psnr
from ..plots.training import plot_curves
from ..render import rasterize
from .checkpoints import initial_weights, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import CropDataset, bsds_root, load_pairs
from .losses import GeneratorLoss


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
        r = rasterize(g.means, g.conics(), g.colors, g.opacities, h, w, "sum", backend)
        total += torch.tensor([psnr(r, x).item(), len(g), 1], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(total)
    generator.train()
    count = max(total[2].item(), 1)
    return {"val_psnr": total[0].item() / count, "val_n": total[1].item() / count}


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


@contextlib.contextmanager
def deterministic():
    """PyTorch's deterministic algorithms inside the block, the previous setting restored after.

    Why: the generator's backward gathers features at triangle corners, and PyTorch's default CPU backward of such
    a gather adds into shared rows from several threads in no fixed order. The sums then differ in the last bit
    from run to run, and dithering, which thresholds the map, turns that bit into a different N within a few steps:
    the same seed gave another run. The deterministic versions cost nothing measurable here.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # warn_only: an op without one warns, never stops a run
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def train(cfg: TrainConfig, progress: bool = True) -> Generator:
    """Run (or resume) training as ``cfg`` says; returns the trained generator (rank 0's copy on every rank).
    The same config and seed give the same run (:func:`deterministic`)."""
    with deterministic():
        return _train(cfg, progress)


def _train(cfg: TrainConfig, progress: bool) -> Generator:
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
        raise ArgumentError(f"{len(train_set)} training images cannot fill one batch of {cfg.batch_size} on {world} "
                            "rank(s): lower --batch-size")
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
            _truncate_log(out / "log.jsonl", state["step"], state["epoch"])
    elif cfg.init_from:  # a new stage on top of earlier weights: fresh optimizer and schedule, step 0
        model.load_state_dict(initial_weights(Path(cfg.init_from), cfg.model, cfg.convert_angle))
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


def _truncate_log(path: Path, step: int, epoch: int):
    """Drop the log rows written after the checkpoint we resume from (they will be redone): training rows
    after its step, and validation rows of a later epoch (a checkpoint taken on an epoch's last step, before
    that epoch's validation, would otherwise see the validation logged twice)."""
    if path.exists():
        rows = [json.loads(r) for r in path.read_text().splitlines() if r.strip()]
        keep = [r for r in rows if r["step"] <= step and not ("val_psnr" in r and r["epoch"] > epoch)]
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))


def _agree(flag: bool, world: int, device) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
