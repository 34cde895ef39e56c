"""The generator network's configuration, as a plain dataclass.

It round-trips through JSON (``to_dict`` / ``from_dict``) and is stored in the metadata of the shipped
safetensors file (the training run's config is ``gilab.training.TrainConfig``).

    GeneratorConfig()            # the compact model gilab ships (~3 M parameters, trains on a CPU)
    GeneratorConfig.paper()      # ConvNeXt-Base widths, as the reference (~100 M; a GPU job)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

#: The Sigma field's angle parametrisations (see GeneratorConfig.angle).
ANGLES = ("offset", "sigmoid")


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
    angle: how the Sigma field turns a Gaussian away from its ellipse's angle. "offset" (the default for new
        models): theta = theta_ellipse + (pi / 2) tanh(r), which reaches every orientation from every triangle,
        with the ellipse's angle given to the fields as (cos 2 theta, sin 2 theta) (wrap-safe). "sigmoid" (the
        paper's form, and how the weights shipped so far were trained): theta = pi sigmoid(tanh(r) +
        logit(theta_ellipse / pi)), whose reach collapses to a sliver for axis-aligned triangles, with the
        ellipse's centre in the triangle's frame as inputs (always 0: the centre is the centroid). Weights saved
        before this option existed load with "sigmoid".
    """

    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (2, 2, 4, 2)
    decoder_widths: tuple[int, ...] = (128, 64, 64, 48, 32)
    out_stride: int = 2
    feat_dim: int = 64
    field_hidden: int = 128
    scale_max: float = 2.0
    colour_step: bool = False
    angle: str = "offset"

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
        d.setdefault("angle", "sigmoid")  # what every model saved before the option was trained with
        if d["angle"] not in ANGLES:
            raise ValueError(f"angle must be one of {', '.join(ANGLES)}, got {d['angle']!r}")
        return cls(**d)
