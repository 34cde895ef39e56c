"""One training run of the generator, as a plain dataclass that round-trips through JSON.

    cfg = TrainConfig(batch_size=4, epochs=30)    # or TrainConfig.load("run.json")
    gilab train-generator --config run.json --batch-size 8   # every field is also a flag; flags win

Each field's ``help`` (its metadata) is what ``gilab train-generator --help`` prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import FileFormatError
from ..generator.config import GeneratorConfig


def _option(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """One training run (checkpoints store it; ``--config run.json`` reads it)."""

    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    data: str | None = _option(None, "BSDS500 root ({train,val}/*.jpg); default $GILAB_DATA/train/bsds500")
    ppm_dir: str | None = _option(None, "pseudo-PPM cache (from prepare-ppm); default <out>/../ppm")
    out: str = _option("runs/generator", "checkpoints, log, curves")
    crop: int = _option(192, "random square crops, pixels (a multiple of the network's stride)")
    batch_size: int = _option(4, "crops per step, per process")
    epochs: int = _option(100, "passes over the training images (the LR schedule spans them)")
    max_steps: int | None = _option(None, "stop early (the schedule still spans --epochs)")
    max_minutes: float | None = _option(None, "stop after this much wall time (checkpointed)")
    lr: float = _option(1e-3, "Adam's learning rate at the start")
    lr_min: float = _option(1e-5, "the learning rate at the end of the cosine schedule")
    grad_clip: float | None = _option(1.0, "max global gradient norm (typical norms: 0.3-1; spikes were 10x)")
    kernel_size: int = _option(3, "dithering cell, pixels")
    density: float = _option(1.0, "gain on the PPM before dithering")
    val_images: int = _option(12, "fixed subset of the val split, full resolution; 0 = all")
    val_every: int = _option(1, "epochs between validations")
    ckpt_every_minutes: float = _option(5.0, "minutes between checkpoints (and one at every epoch's end)")
    place_from: str = _option("pred", "dither the predicted PPM ('pred', as at inference) or the target ('target')")
    mse_weight: float = _option(0.7, "weight of the PPM-weighted MSE in L_rec (the paper: 0.7; 50 balances it with "
                                      "SSIM, so that brightness is learned)")
    ssim_weight: float = _option(0.3, "weight of the PPM-weighted 1 - SSIM in L_rec (the paper: 0.3)")
    density_range: float = _option(1.0, "each crop's density gain is drawn log-uniformly in [1/x, x]: the network "
                                        "learns the densities a target count asks for (1: the configured one only)")
    seed: int = _option(0, "seed of the crops and of the initial weights")
    backend: str = _option("auto", "render backend")
    threads: int | None = _option(None, "torch threads per process")
    init_from: str | None = _option(None, "start from these weights (.pt checkpoint or .safetensors): a new stage")
    convert_angle: bool = _option(False, "let --init-from weights trained with --angle sigmoid start an --angle offset "
                                         "model (the two always-zero inputs' weights zeroed; the same Gaussians at r = 0)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("model"), dict):
            d["model"] = GeneratorConfig.from_dict(d["model"])
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a JSON config; a missing or malformed file is a one-line error."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise FileFormatError(f"{path}: not a training config ({' '.join(str(exc).split())[:120]})") from None
