"""Training data for the generator: pseudo-PPMs (DESIGN.md 4.9) and random crops.

    prepare_ppm("$GILAB_DATA/train/bsds500/train", "cache/ppm/train", iters=300)   # resumable, shardable
    python -m gilab.generator.data IMAGES_DIR OUT_DIR --iters 300 --shard 0/2       # the same from a shell
    ds = CropDataset(images_dir, ppm_dir, crop=192)   # (image (3,c,c), ppm (c,c)) with random crops and flips

A pseudo-PPM is what the position field learns: fit GaussianImage to the image (quad-tree start + a short fit),
then a density from the distance of every pixel to its 10th-nearest Gaussian (``gilab.placement.ppm_from_image``).
Each one is cached as ``<out>/<image stem>.npy`` (float16, (H, W)), written atomically (temp file + rename),
so an interrupted run resumes where it stopped and several processes can share the work (``--shard i/n``,
or each torchrun rank takes its own shard).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def bsds_root() -> Path:
    """$GILAB_DATA/train/bsds500 (the folder with train/ and val/)."""
    root = os.environ.get("GILAB_DATA")
    if not root:
        from ..errors import DataError

        raise DataError("set GILAB_DATA to the data folder (it holds train/bsds500/{train,val}), "
                        "or `gilab download bsds500`")
    return Path(root) / "train" / "bsds500"


def list_images(folder: str | Path) -> list[Path]:
    """Image files in ``folder``, sorted by name (the order every shard and rank agrees on)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such image folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def ppm_path(out_dir: str | Path, image: Path) -> Path:
    return Path(out_dir) / f"{image.stem}.npy"


def parse_shard(text: str | None) -> tuple[int, int]:
    """"i/n" -> (i, n). Default: this process' torchrun rank and world size, or (0, 1)."""
    if text:
        i, n = (int(v) for v in text.split("/"))
        if not 0 <= i < n:
            raise ValueError(f"--shard {text}: need 0 <= i < n")
        return i, n
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def save_atomic(path: Path, array: np.ndarray):
    """np.save to a temp file beside ``path``, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def prepare_ppm(images_dir: str | Path, out_dir: str | Path, iters: int = 300, seconds: float | None = None,
                shard: tuple[int, int] = (0, 1), progress: bool = True, backend: str = "auto",
                compute=None) -> dict:
    """Write the pseudo-PPM of every image in ``images_dir`` (this shard's share) into ``out_dir``.

    Images whose ``.npy`` already exists are skipped. ``compute(image (3,H,W)) -> (H,W)`` replaces
    ``gilab.placement.ppm_from_image(image, iters=iters, seconds=seconds, backend=backend)`` (tests use a
    cheap one). ``iters=0`` gives the quad-tree's own map (no fit: ~0.5 s per BSDS image).
    Returns {"done": written now, "skipped": already there, "seconds": wall time}.
    """
    from tqdm.auto import tqdm

    from ..io import load_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    i, n = shard
    mine = list_images(images_dir)[i::n]
    todo = [p for p in mine if not ppm_path(out_dir, p).exists()]
    if compute is None and todo:
        from ..placement import ppm_from_image

        def compute(image):
            return ppm_from_image(image, iters=iters, seconds=seconds, backend=backend)

    start = time.perf_counter()
    for path in tqdm(todo, desc=f"pseudo-PPM {i}/{n}", unit="img", disable=not progress):
        ppm = compute(load_image(path))
        ppm = ppm.detach().cpu().numpy() if isinstance(ppm, Tensor) else np.asarray(ppm)
        save_atomic(ppm_path(out_dir, path), ppm.astype(np.float16))
    return {"done": len(todo), "skipped": len(mine) - len(todo), "seconds": time.perf_counter() - start}


def load_ppm(out_dir: str | Path, image: Path) -> Tensor:
    """The cached pseudo-PPM of ``image`` as float32 (H, W)."""
    return torch.from_numpy(np.load(ppm_path(out_dir, image)).astype(np.float32))


# ----------------------------------------------------------------- datasets
def load_pairs(images_dir: str | Path, ppm_dir: str | Path, limit: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """[(image (3,H,W) uint8, ppm (H,W) float16)] for every image that has a cached PPM (kept compact in memory)."""
    from ..io import load_image

    paths = [p for p in list_images(images_dir) if ppm_path(ppm_dir, p).exists()]
    if limit:
        paths = paths[:limit]
    pairs = []
    for p in paths:
        image = (load_image(p) * 255).round().to(torch.uint8)
        ppm = load_ppm(ppm_dir, p).half()
        if ppm.shape != image.shape[-2:]:
            raise ValueError(f"{ppm_path(ppm_dir, p)}: PPM {tuple(ppm.shape)} does not match image "
                             f"{tuple(image.shape[-2:])}; delete it and run prepare-ppm again")
        pairs.append((image, ppm))
    return pairs


class CropDataset(torch.utils.data.Dataset):
    """Random square crops (with flips and, for square crops, transposes) of images and their pseudo-PPMs.

    Item i is a fresh random crop of image i: (image (3, c, c) float32 in [0, 1], ppm (c, c) float32).
    Images smaller than the crop are padded by reflection. Randomness comes from torch's global RNG,
    so a checkpoint that saves it resumes the same stream (with ``workers=0``).
    """

    def __init__(self, pairs: list[tuple[Tensor, Tensor]], crop: int = 192):
        if not pairs:
            raise ValueError("no training images with a pseudo-PPM: run prepare-ppm first")
        self.pairs, self.crop = pairs, crop

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, ppm = self.pairs[i]
        x = torch.cat([image.float() / 255, ppm.float()[None]])  # (4, H, W): crop both at once
        c = self.crop
        ph, pw = max(0, c - x.shape[1]), max(0, c - x.shape[2])
        if ph or pw:
            x = torch.nn.functional.pad(x[None], (0, pw, 0, ph), mode="reflect")[0]
        top = int(torch.randint(0, x.shape[1] - c + 1, ()))
        left = int(torch.randint(0, x.shape[2] - c + 1, ()))
        x = x[:, top:top + c, left:left + c]
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        if torch.rand(()) < 0.5:
            x = x.flip(1)
        if torch.rand(()) < 0.5:
            x = x.transpose(1, 2)
        x = x.contiguous()
        return x[:3], x[3]


# ---------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("images", type=Path, nargs="+", help="image folder(s), e.g. $GILAB_DATA/train/bsds500/train")
    p.add_argument("--out", type=Path, required=True, help="PPM cache folder (a subfolder per image folder)")
    p.add_argument("--iters", type=int, default=300, help="GaussianImage iterations per image (default 300)")
    p.add_argument("--seconds", type=float, default=None, help="or a wall-clock budget per image")
    p.add_argument("--shard", default=None, help="i/n: this process does images i, i+n, ... "
                   "(default: the torchrun rank, or all)")
    p.add_argument("--backend", default="auto", help="render backend of the fits (auto, torch, cpu, ...)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    shard = parse_shard(args.shard)
    for folder in args.images:
        out = args.out / folder.name if len(args.images) > 1 else args.out
        stats = prepare_ppm(folder, out, iters=args.iters, seconds=args.seconds, shard=shard,
                            progress=not args.no_progress, backend=args.backend)
        print(f"{folder}: {stats['done']} written, {stats['skipped']} already there, "
              f"{stats['seconds']:.0f} s -> {out}", flush=True)
    return 0


DESCRIPTION = ("Compute and cache the pseudo-PPMs (the position field's training targets) of every image in "
               "the given folders: resumable, shardable across processes.")


def add_cli(subparsers):
    """Register ``gilab prepare-ppm`` on the ``gilab`` command's subparsers."""
    p = subparsers.add_parser("prepare-ppm", help="compute the generator's training targets (pseudo-PPMs)",
                              description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(run=run)
    return p


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gilab.generator.data", description=DESCRIPTION)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
