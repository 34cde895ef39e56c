"""Training checkpoints, read without pickle, and the export of a checkpoint as shippable weights.

A checkpoint (``<out>/last.pt``, ``best.pt``) holds the model's and optimizer's state dicts, the loop's state,
the config and the RNG state: tensors and plain Python values only, so it is read with
``torch.load(weights_only=True)``, which refuses any file that would need to run code to load. A file
that needs more than that (an old pickled checkpoint, or a crafted one) is refused with one line.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..errors import FileFormatError
from ..files import atomic_path
from ..generator import Generator, GeneratorConfig
from .config import TrainConfig

#: What a checkpoint written by :func:`save_checkpoint` holds.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "state", "config", "rng")


def save_checkpoint(path: Path, model: Generator, optimizer, scheduler, state: dict, cfg: TrainConfig):
    """Write ``path`` atomically: the keys of CHECKPOINT_KEYS, tensors and plain values only."""
    with atomic_path(path) as tmp:  # an interrupted save keeps the previous checkpoint
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "state": state, "config": cfg.to_dict(),
                    "rng": torch.get_rng_state()}, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents, read with ``weights_only=True``: no code in the file ever runs.

    Raises:
        FileNotFoundError: no such file.
        FileFormatError: a file that needs pickle to load, a damaged or truncated file, or one that lacks
            the keys a checkpoint has.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise FileFormatError(
            f"{path}: refused: loading it would run code from the file (a pickled object), and gilab never "
            "unpickles files. If you wrote it yourself with an older gilab, load it once in a Python session you "
            "trust (torch.load with weights_only off) and torch.save it again as a dict of tensors and numbers.") from None
    except Exception as exc:  # noqa: BLE001 (torch reports damaged archives with several error types)
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise FileFormatError(f"{path}: not a readable checkpoint (damaged or truncated? {detail})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise FileFormatError(f"{path}: not a gilab training checkpoint (missing {', '.join(missing)})")
    return ckpt


def initial_weights(path: Path, config=None, convert_angle: bool = False) -> dict:
    """The model state dict in a training checkpoint (.pt) or in shipped weights (.safetensors).

    With ``config`` (a GeneratorConfig), weights of a network with another shape or angle parametrisation are
    refused in one line: loading them would silently change what every weight means. ``convert_angle`` lets
    weights trained with the paper's angle start an ``angle="offset"`` network (``to_offset_angle``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        model = Generator.from_pretrained(path)
        theirs, state = model.config, model.state_dict()
    else:
        ckpt = load_checkpoint(path)
        theirs, state = TrainConfig.from_dict(ckpt["config"]).model, ckpt["model"]
    if config is not None and convert_angle and theirs.angle == "sigmoid" and config.angle == "offset":
        state, theirs = to_offset_angle(state), GeneratorConfig(**{**theirs.to_dict(), "angle": "offset"})
    if config is not None:
        mine, other = config.to_dict(), theirs.to_dict()
        diff = [f"{k}={other[k]!r} (asked: {mine[k]!r})" for k in mine if k != "colour_step" and mine[k] != other[k]]
        if diff:
            raise FileFormatError(f"{path}: these weights were trained with {', '.join(diff)}; pass a --config "
                                  "(or flags such as --angle) that matches them")
    return state


def to_offset_angle(state: dict) -> dict:
    """Weights trained with the paper's angle (``angle="sigmoid"``), ready for an ``angle="offset"`` network.

    The two forms agree where it matters for a start: at r = 0 both give the ellipse's own angle. What differs
    is two of the fields' inputs: the ellipse's centre in the triangle's frame (always 0, so the weights that read
    it never learned anything) becomes (cos 2 theta, sin 2 theta). Zeroing those weights makes the converted
    network place, size and colour every Gaussian exactly as before; only how ``r`` turns it changes.
    """
    state = dict(state)
    where = state["fields.bc.0.weight"].shape[1] - 4            # the ellipse's 4 inputs end the BC field's x
    for name in ("bc", "sigma", "opacity"):
        key = f"fields.{name}.0.weight"
        weight = state[key].clone()
        weight[:, where:where + 2] = 0
        state[key] = weight
    return state


INT8_MIN_NUMEL = 16_384  # as shipped: smaller tensors (norms, biases, the small heads) stay float16


def export(checkpoint: str | Path, to: str | Path, half: bool = False, int8: bool = False,
           colour_step: bool | None = None, **metadata) -> Path:
    """Write a checkpoint's model as a shippable safetensors file (config in the metadata; ``half``: float16;
    ``int8``: float16, and matrices and kernels of 16,384 or more entries as int8 with per-channel scales;
    ``colour_step``: switch the ISRA colour step on or off in the exported config, default: as trained)."""
    ckpt = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(ckpt["config"])
    if colour_step is not None:
        cfg.model.colour_step = colour_step
    model = Generator(cfg.model)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:  # weights of another architecture
        raise FileFormatError(f"{checkpoint}: its weights do not fit its own config "
                              f"({' '.join(str(exc).split())[:160]})") from None
    st = ckpt["state"]
    meta = {"step": st.get("step"), "epoch": st.get("epoch"), "val_psnr": st.get("val_psnr"),
            "val_n": st.get("val_n"), **metadata}
    return model.save_pretrained(to, dtype=torch.float16 if half or int8 else None,
                                 int8_min_numel=INT8_MIN_NUMEL if int8 else None,
                                 **{k: v for k, v in meta.items() if v is not None})
