"""Configurations of the generator network and of its training, as plain dataclasses.

Both round-trip through JSON (``to_dict`` / ``from_dict``): the network's config is stored in the
metadata of the shipped safetensors file, the training config in every checkpoint.

    GeneratorConfig()            # the compact model gilab ships (~3 M parameters, trains on a CPU)
    GeneratorConfig.paper()      # ConvNeXt-Base widths, as the reference (~100 M; a GPU job)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class GeneratorConfig:
    """The network's shape. Everything here is stored with the weights.

    widths, depths: ConvNeXt stages at strides 4, 8, 16, 32.
    decoder_widths: UNet decoder outputs at strides 16, 8, 4, 2, 1 (only down to ``out_stride`` are built).
    out_stride: resolution of the feature map and of the position logits (1 = full resolution, as the
        reference; 2 or 4 trade a little detail for much less CPU time: the decoder's full-resolution
        stage and the per-pixel head cost most of a CPU training step, and we only ever sample features at
        triangle vertices and centres, and max-pool the PPM over k x k cells).
    feat_dim: channels of the feature map (64 in the paper).
    field_hidden: width of the hidden layers of the BC, Sigma and opacity MLPs.
    scale_max: the Sigma field's scale factors lie in (0, scale_max) times the ellipse semi-axes.
    colour_step: after the fields, rescale each colour by one multiplicative least-squares step (ISRA) that
        accounts for the overlap of sum blending (``colour_step.py``; a render and two backward passes).
        Weights saved before this option existed load with it off.
    """

    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (2, 2, 4, 2)
    decoder_widths: tuple[int, ...] = (128, 64, 64, 48, 32)
    out_stride: int = 2
    feat_dim: int = 64
    field_hidden: int = 128
    scale_max: float = 2.0
    colour_step: bool = False

    @classmethod
    def paper(cls) -> GeneratorConfig:
        """ConvNeXt-Base widths/depths and a full-resolution 64-channel feature map, as in the paper."""
        return cls(widths=(128, 256, 512, 1024), depths=(3, 3, 27, 3), decoder_widths=(512, 256, 128, 64, 64),
                   out_stride=1, feat_dim=64, field_hidden=256)

    @property
    def stride(self) -> int:
        """Input sizes are padded to a multiple of this (the deepest stage's stride)."""
        return 4 * 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        known = {f.name for f in fields(cls)}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**d)


@dataclass
class TrainConfig:
    """One training run. ``python -m gilab.generator.train --config run.json`` reads this as JSON;
    every field can also be given as a flag (``--batch-size 4``), flags win."""

    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    data: str | None = None            # BSDS500 root ({train,val}/*.jpg); default $GILAB_DATA/train/bsds500
    ppm_dir: str | None = None         # pseudo-PPM cache (from prepare-ppm); default <out>/../ppm
    out: str = "runs/generator"        # checkpoints, log, curves
    crop: int = 192                    # random square crops (a multiple of the network's stride)
    batch_size: int = 4                # per process
    epochs: int = 100
    max_steps: int | None = None       # stop early (the schedule still spans ``epochs``)
    max_minutes: float | None = None   # stop after this much wall time (checkpointed)
    lr: float = 1e-3
    lr_min: float = 1e-5
    grad_clip: float | None = 1.0      # max global gradient norm (typical norms here: 0.3-1; spikes were 10x)
    kernel_size: int = 3
    density: float = 1.0
    val_images: int = 12               # fixed subset of the val split, full resolution; 0 = all
    val_every: int = 1                 # epochs
    ckpt_every_minutes: float = 5.0
    place_from: str = "pred"           # dither the predicted PPM ("pred", as at inference) or the target ("target")
    seed: int = 0
    backend: str = "auto"              # render backend
    threads: int | None = None         # torch threads per process
    init_from: str | None = None       # start from these weights (.pt checkpoint or .safetensors): a fine-tuning stage

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
        return cls.from_dict(json.loads(Path(path).read_text()))
