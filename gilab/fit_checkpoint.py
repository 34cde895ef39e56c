"""A long fit that survives Ctrl-C and kill -9: ``fit(..., checkpoint=path)`` keeps its state on disk.

    fit(image, init=start, iters=50_000, checkpoint="out/kodim05.fit")   # killed at 31,200? run it again

Every ``checkpoint_every`` seconds, between whole steps (never from the Ctrl-C handler, which may land
mid-update), the fit writes one safetensors file: the trainable parameters, the optimiser's state (Adan's running
tensors and step count, the learning-rate schedule), the history so far, and what the fit is (image size, N,
recipe). The same call finds the file and continues from there, so a kill or Ctrl-C loses at most
``checkpoint_every`` seconds; a file of another fit is refused in one line, never half-used. A finished fit deletes
its file. Writes are atomic (a crash mid-write leaves the previous file), and reading runs no code (safetensors
holds tensors and strings only).

The optimiser's state comes from the stepper (``optimiser_state`` / ``load_optimiser_state``), the same contract
for the autograd step and the fused one, so a resumed fit continues the trajectory it was on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .errors import GilabError
from .files import atomic_path

FORMAT = "gilab-fit-checkpoint/1"
HISTORY = ("iteration", "seconds", "loss", "psnr")


def identity(model, stepper, lr: float, lr_step: int, blend: str) -> dict:
    """What a checkpoint must match to be resumed: image size, N, recipe, and which step wrote it."""
    return {"format": FORMAT, "height": model.height, "width": model.width, "n": int(model.colors.shape[0]),
            "param": model.param, "lr": float(lr), "lr_step": int(lr_step), "blend": blend,
            "step": type(stepper).__name__}


def save(path: str | Path, model, stepper, history, iteration: int, seconds: float, ident: dict) -> Path:
    """Write the fit's state after ``iteration`` steps, ``seconds`` into it (init included)."""
    from safetensors.torch import save_file

    tensors = {f"param.{name}": p.detach().cpu().contiguous() for name, p in model.named_parameters()}
    optimiser, numbers = stepper.optimiser_state()
    tensors.update({f"optimiser.{key}": t.detach().cpu().contiguous() for key, t in optimiser.items()})
    tensors.update({f"history.{key}": torch.tensor(getattr(history, key), dtype=torch.float64) for key in HISTORY})
    metadata = {"identity": json.dumps(ident), "optimiser": json.dumps(numbers), "iteration": str(int(iteration)),
                "seconds": repr(float(seconds))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def load(path: str | Path, model, stepper, ident: dict):
    """Put a checkpoint's parameters and optimiser state into ``model`` and ``stepper``.

    Returns:
        (history, iteration, seconds): the history so far as columns (``{"iteration": [...], "seconds": [...],
        "loss": [...], "psnr": [...]}``, for :class:`~gilab.fitting.FitHistory`), the steps taken, and the seconds
        the fit had run (init included).

    Raises:
        GilabError: the file is not a fit checkpoint, or it is one of another fit (what differs, in one line).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open, not a dict)
        saved = json.loads(metadata["identity"])
        numbers, iteration, seconds = json.loads(metadata["optimiser"]), int(metadata["iteration"]), \
            float(metadata["seconds"])
    except Exception as error:  # noqa: BLE001 (safetensors raises its own types; a damaged file: one line)
        raise GilabError(f"{path}: not a readable fit checkpoint ({type(error).__name__}); delete it to start over") \
            from None
    differ = [key for key in ident if saved.get(key) != ident[key]]
    if differ:
        what = ", ".join(f"{key} {saved.get(key)} there, {ident[key]} here" for key in differ)
        raise GilabError(f"{path} is the checkpoint of another fit ({what}): delete it or choose another path")
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors[f"param.{name}"])
    stepper.load_optimiser_state({key.removeprefix("optimiser."): t for key, t in tensors.items()
                                  if key.startswith("optimiser.")}, numbers)
    history = {key: [float(v) for v in tensors[f"history.{key}"].tolist()] for key in HISTORY}
    history["iteration"] = [int(i) for i in history["iteration"]]
    if len(history["iteration"]) != iteration + 1 or not all(math.isfinite(t) for t in history["seconds"]):
        raise GilabError(f"{path}: its history does not match its step count; delete it to start over")
    return history, iteration, seconds
