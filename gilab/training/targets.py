"""The position field's training targets: pseudo-PPMs of fitted images, computed once and cached.

    ppm = ppm_from_image(image, iters=FIT_ITERS)               # quad-tree init + a fit + pseudo_ppm
    prepare_ppm("$GILAB_DATA/train/bsds500/train", "cache/ppm/train")   # resumable, shardable

A pseudo-PPM is what the position field learns: fit GaussianImage to the image (quad-tree start + a short fit),
then a density from the distance of every pixel to its 10th-nearest Gaussian (``gilab.placement.pseudo_ppm``).
Each one is cached as ``<out>/<image stem>.npy`` (float16, (H, W)), written atomically, so an interrupted run
resumes where it stopped and several processes can share the work (``shard=(i, n)``, or torchrun ranks).
Caches are read with numpy's ``allow_pickle=False``: a cached file never runs code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError, FileFormatError
from ..files import atomic_path, list_images
from ..fitting import fit
from ..placement.pseudo_ppm import NEIGHBOURS, pseudo_ppm
from ..placement.quadtree import quadtree_init

#: prepare-ppm's fit length, chosen from ``benchmarks/ppm_fit_length.py`` (figures/README.md, "Pseudo-PPM fit
#: length"): by 2,000 iterations the map has moved 90 % as far from the quad-tree's as a 10,000-iteration fit
#: moves it; longer fits mostly reshuffle it, at 2.5x the time per further 5 %.
FIT_ITERS = 2000
#: The record of a cache folder's settings, beside its maps.
SETTINGS = "ppm_settings.json"


def ppm_from_image(image: Tensor, iters: int = 100, seconds: float | None = None, k: int = NEIGHBOURS,
                   target_count: int | None = None, param: str = "rs", seed: int = 0,
                   backend: str = "auto") -> Tensor:
    """The pseudo-PPM of an image: quad-tree init, a short GaussianImage fit, then :func:`pseudo_ppm`.

    The reference fits 50,000 iterations. The quad-tree start is itself detail-adaptive, so a short fit only
    refines it (on a BSDS image, 50 iterations move the means by 1.5 px on average and leave the map 0.97
    correlated with the quad-tree's own); ``iters=0`` gives the quad-tree's map at no fitting cost.
    Cost: the fit dominates (about 1.5 s per iteration for 14k Gaussians on 481x321 with the ``torch``
    backend on 2 busy cores), the rest is ~0.5 s.

    Args:
        image: (3, H, W) in [0, 1].
        iters, seconds: the fit's budget (whichever ends first).
        k: see :func:`pseudo_ppm`.
        target_count: the quad-tree's number of Gaussians (default: the reference thresholds decide).
        param, seed, backend: passed to :func:`gilab.fit`.

    Returns:
        (H, W) float32 in [0, 1].
    """
    _, height, width = image.shape
    gaussians = quadtree_init(image, target_count=target_count, seed=seed)
    if iters > 0 or seconds is not None:
        gaussians = fit(image, init=gaussians, iters=iters, seconds=seconds, param=param, seed=seed,
                        backend=backend, progress=False, return_on_interrupt=False).gaussians  # never save a cut fit
    return pseudo_ppm(gaussians, height, width, k)


def ppm_path(out_dir: str | Path, image: Path) -> Path:
    """Where the cached pseudo-PPM of ``image`` lives: ``<out_dir>/<image stem>.npy``."""
    return Path(out_dir) / f"{image.stem}.npy"


def prepare_ppm(images_dir: str | Path, out_dir: str | Path, iters: int = FIT_ITERS, seconds: float | None = None,
                shard: tuple[int, int] = (0, 1), progress: bool = True, backend: str = "auto",
                compute=None) -> dict:
    """Write the pseudo-PPM of every image in ``images_dir`` (this shard's share) into ``out_dir``.

    Images whose ``.npy`` already exists are skipped. ``compute(image (3,H,W)) -> (H,W)`` replaces
    :func:`ppm_from_image` ``(image, iters=iters, seconds=seconds, backend=backend)`` (tests use a
    cheap one). ``iters=0`` gives the quad-tree's own map (no fit: ~0.5 s per BSDS image).
    Returns {"done": written now, "skipped": already there, "seconds": wall time}.
    """
    from tqdm.auto import tqdm

    from ..io import load_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _claim_settings(out_dir, {"iters": iters, "seconds": seconds, "neighbours": NEIGHBOURS})
    i, n = shard
    images = list_images(images_dir)
    stems = [p.stem for p in images]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:  # x.jpg and x.png would share x.npy
        raise ArgumentError(f"{images_dir}: images {', '.join(clash[:3])} exist with several suffixes; their "
                            "pseudo-PPMs would share a file: keep one of each")
    mine = images[i::n]
    todo = [p for p in mine if not ppm_path(out_dir, p).exists()]
    if compute is None and todo:
        def compute(image):
            return ppm_from_image(image, iters=iters, seconds=seconds, backend=backend)

    start = time.perf_counter()
    for path in tqdm(todo, desc=f"pseudo-PPM {i}/{n}", unit="img", disable=not progress):
        ppm = compute(load_image(path))
        ppm = ppm.detach().cpu().numpy() if isinstance(ppm, Tensor) else np.asarray(ppm)
        with atomic_path(ppm_path(out_dir, path)) as tmp, open(tmp, "wb") as f:
            np.save(f, ppm.astype(np.float16))
    return {"done": len(todo), "skipped": len(mine) - len(todo), "seconds": time.perf_counter() - start}


def _claim_settings(out_dir: Path, settings: dict) -> None:
    """Record how ``out_dir``'s maps are made (``ppm_settings.json``), or check that they were made so: a resumed
    run never mixes maps of two fit lengths (the skip above trusts every file that exists)."""
    record = out_dir / SETTINGS
    if record.exists():
        try:
            made = json.loads(record.read_text())
        except (ValueError, OSError):
            made = None
        if made != settings:
            raise ArgumentError(f"{out_dir} holds pseudo-PPMs made with {made}, not {settings}: give another "
                                "--out (or delete that folder)")
        return
    if any(out_dir.glob("*.npy")):
        raise ArgumentError(f"{out_dir} holds pseudo-PPMs with no record of how they were made ({SETTINGS}, "
                            "which older versions did not write): give another --out (or delete that folder)")
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(settings))


def load_ppm(out_dir: str | Path, image: Path) -> Tensor:
    """The cached pseudo-PPM of ``image`` as float32 (H, W); a damaged file is a one-line FileFormatError."""
    path = ppm_path(out_dir, image)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FileFormatError(f"{path}: not a readable pseudo-PPM ({' '.join(str(exc).split())[:120]}); "
                              "delete it and run prepare-ppm again") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise FileFormatError(f"{path}: a pseudo-PPM must be a finite float (H, W) map, got {array.dtype} "
                              f"{array.shape}; delete it and run prepare-ppm again")
    return torch.from_numpy(array.astype(np.float32))
