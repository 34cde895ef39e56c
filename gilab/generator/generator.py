"""The generator pipeline: image -> feature net -> PPM -> points -> triangles -> fields -> colour step -> Gaussians2D.

    gen = Generator.from_pretrained()                 # the shipped compact model, offline, no pickle
    g = gen(image)                                    # (3, H, W) in [0, 1], any size -> Gaussians2D
    g = gen(image, target_count=40_000)               # an exact-ish budget (density found by bisection)
    gs = gen([a, b], kernel_size=4, timings=t)        # a list -> a list; t gets seconds per stage
    g = gen(image, colour_step=False)                 # the fields' own colours (as the paper's network)

Stages (docs/method.md, section 4): :class:`FeatureNet` (ConvNeXt-UNet + position head, batched, differentiable),
:meth:`Generator.mesh` (dithering, Delaunay, ellipses: ``gilab.placement``, NumPy, not differentiable), and
:class:`GaussianFields` (per-triangle MLPs, differentiable), then, if the config asks for it, the colour step
(``colour_step.py``: one closed-form ISRA rescaling of the colours, gilab's addition to the paper). Training uses
the same three methods (``predict``, ``mesh``, ``build``); ``__call__`` wraps them for inference under
``torch.no_grad()``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ArgumentError, FileFormatError, GilabError
from ..files import atomic_path
from .colour_step import apply_colour_step
from .config import GeneratorConfig
from .fields import FieldsOutput, GaussianFields, Mesh
from .model import FeatureNet

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "generator.safetensors"
FORMAT_NAME = "gilab.generator"
FORMAT_VERSION = 1
#: Fewest Gaussians a target count may ask for: the mesh has its four corners and the edge points at least.
MIN_TARGET_COUNT = 8


class Generator(nn.Module):
    """Instant-GI's generator. ``Generator(GeneratorConfig())`` is untrained; use :meth:`from_pretrained`."""

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        self.config = config or GeneratorConfig()
        self.net = FeatureNet(self.config).to(memory_format=torch.channels_last)
        self.fields = GaussianFields(self.config.feat_dim, self.config.field_hidden, self.config.scale_max,
                                     self.config.angle)
        self.last_timings: dict[str, float] = {}

    # ------------------------------------------------------------------ stages
    def pad(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 3, H', W') padded at the bottom/right (edge replicated) to the network's stride."""
        s = self.config.stride
        h, w = images.shape[-2:]
        ph, pw = -h % s, -w % s
        return F.pad(images, (0, pw, 0, ph), mode="replicate") if ph or pw else images

    def predict(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The network, batched. images (B, 3, H, W) in [0, 1].

        Returns (features (B, F, H'/s, W'/s) over the padded canvas, padded images (B, 3, H', W'),
        ppm (B, H, W) in [0, 1]). The position logits are predicted at stride ``out_stride`` and upsampled
        bilinearly before the sigmoid: the PPM is smooth and is max-pooled over k x k cells anyway.
        """
        h, w = images.shape[-2:]
        padded = self.pad(images)
        features, logits = self.net(padded)
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return features, padded, torch.sigmoid(logits[:, 0, :h, :w])

    @torch.no_grad()
    def mesh(self, ppm: Tensor, kernel_size: int = 3, density: float = 1.0,
             target_count: int | None = None) -> Mesh:
        """PPM (H, W) -> dithered points -> Delaunay triangles -> one ellipse per triangle (``gilab.placement``).

        With ``target_count`` the density gain is searched (placement's count control: bisect the cheap
        2 x points estimate, triangulate, correct) until the number of triangles is within 2 %.
        """
        from ..placement.dither import dither
        from ..placement.ellipses import fit_ellipses
        from ..placement.place import count_estimate, saturating_density, search_count
        from ..placement.triangulate import triangulate

        ppm = ppm.detach().float().cpu()
        height, width = ppm.shape

        def build(gain: float) -> Mesh:
            tri = triangulate(dither(ppm, kernel_size, gain), height, width)
            centres, axes, angles = fit_ellipses(tri.triangles)
            return Mesh(tri.points, tri.simplices, tri.neighbors, centres, axes, angles)

        if target_count is None:
            return build(density)
        saturating = saturating_density(ppm, kernel_size)  # every cell marked: the most Gaussians there are
        return search_count(build, count_estimate(ppm, kernel_size), int(target_count),
                            low=1e-6, high=saturating, increasing=True,
                            what=f"the generator with kernel_size={kernel_size} on a {height}x{width} image")

    def build(self, features: Tensor, padded: Tensor, mesh: Mesh, size: tuple[int, int],
              colour_step: bool | None = None) -> FieldsOutput:
        """The fields for one image: features (F, h, w), padded image (3, H', W'), mesh -> T Gaussians.

        colour_step: rescale the colours by one ISRA step against the image (``colour_step.py``); default: the
            config's. The factor carries no gradient; the colours it multiplies do.
        """
        out = self.fields(features, padded, mesh.to(features.device))
        height, width = int(size[0]), int(size[1])
        out.gaussians.size = (height, width)
        step = self.config.colour_step if colour_step is None else colour_step
        if step:
            out.gaussians = apply_colour_step(out.gaussians, padded[:, :height, :width])
        return out

    # --------------------------------------------------------------- inference
    @torch.no_grad()
    def forward(self, image, kernel_size: int = 3, density: float = 1.0, target_count: int | None = None,
                timings: dict | None = None, colour_step: bool | None = None):
        """Gaussians for one image (or a list of images -> a list).

        image: (3, H, W) tensor in [0, 1], a path, a PIL image or an array (grey and RGBA via ``gilab.io``).
        kernel_size: the dithering cell, px (N is at most about 2 H W / k^2).
        density: a gain on the PPM before dithering (more Gaussians above 1, fewer below).
        target_count: aim for this many Gaussians instead (the density is searched; within 2 %).
        timings: if given, gets seconds spent in "network", "placement" and "fields" (summed over a list);
            also kept in ``self.last_timings``. "fields" includes the colour step.
        colour_step: one ISRA step on the colours after the fields (default: the weights' config says).
        """
        if isinstance(image, (list, tuple)):
            total: dict[str, float] = {}
            out = [self(im, kernel_size, density, target_count, total, colour_step) for im in image]
            self.last_timings = total
            if timings is not None:
                timings.update(total)
            return out
        from ..io import as_image

        _check_placement_options(kernel_size, density, target_count)
        device = next(self.parameters()).device
        x = as_image(image).to(device, torch.float32)
        size = tuple(x.shape[-2:])
        t = {}
        tic = _tic(device)
        features, padded, ppm = self.predict(x[None])
        t["network"] = _toc(device, tic)
        tic = _tic(device)
        mesh = self.mesh(ppm[0], kernel_size, density, target_count)
        t["placement"] = _toc(device, tic)
        tic = _tic(device)
        g = self.build(features[0], padded[0], mesh, size, colour_step).gaussians
        t["fields"] = _toc(device, tic)
        self.last_timings = t
        if timings is not None:
            for k, v in t.items():
                timings[k] = timings.get(k, 0.0) + v
        return g

    def ppm(self, image) -> Tensor:
        """The position probability map (H, W) in [0, 1] for one image, without placing anything."""
        from ..io import as_image

        x = as_image(image).to(next(self.parameters()).device, torch.float32)
        with torch.no_grad():
            return self.predict(x[None])[2][0]

    # ------------------------------------------------------------------ weights
    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None, int8_min_numel: int | None = None,
                        **metadata) -> Path:
        """Write the weights as safetensors (no pickle) with the config as JSON in the metadata.

        dtype: store the weights in this dtype (e.g. torch.float16 halves the file; loading casts back to
            the model's float32).
        int8_min_numel: store weight matrices and kernels with at least this many entries as int8 with one
            float32 scale per output channel (``<name>.int8_scale``); :meth:`from_pretrained` dequantizes them.
        Extra keyword arguments are stored as metadata strings (e.g. training notes).
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for k, v in self.state_dict().items():
            v = v.detach().float().cpu()
            if int8_min_numel is not None and v.ndim >= 2 and v.numel() >= int8_min_numel:
                tensors[k], tensors[k + INT8_SCALE] = _quantize_int8(v)
            else:
                tensors[k] = v.to(dtype or v.dtype).contiguous()
        meta = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION),
                "config": json.dumps(self.config.to_dict()), **{k: str(v) for k, v in metadata.items()}}
        with atomic_path(path, mode=0o644) as tmp:  # shipped inside the package: readable by every user
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device=None) -> Generator:
        """Load weights written by :meth:`save_pretrained`; by default the ones shipped inside gilab
        (``gilab/weights/generator.safetensors``). Never touches the network."""
        from safetensors import safe_open

        path = Path(path) if path is not None else WEIGHTS
        if not path.is_file():
            raise GilabError(f"no generator weights at {path}: train them with `gilab train-generator` "
                             "(see gilab/weights/MODEL_CARD.md) or pass the path of a .safetensors file")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                state = _dequantize_int8({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (not a dict)
        except Exception as exc:  # noqa: BLE001 (safetensors raises its own error types for damaged headers)
            raise FileFormatError(f"{path}: not a safetensors weights file ({' '.join(str(exc).split())[:120]})") \
                from None
        if meta.get("format") != FORMAT_NAME:
            raise FileFormatError(f"{path}: not gilab generator weights (format={meta.get('format')!r})")
        if not str(meta.get("version", "")).isdigit() or int(meta["version"]) > FORMAT_VERSION:
            raise FileFormatError(f"{path}: weights version {meta.get('version')!r} is not one this gilab reads "
                                  f"(up to {FORMAT_VERSION}); upgrade gilab")
        try:
            model = cls(GeneratorConfig.from_dict(json.loads(meta["config"])))
            model.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise FileFormatError(f"{path}: damaged generator weights ({' '.join(str(exc).split())[:120]})") from None
        model.metadata = meta
        model.eval()
        return model.to(device) if device is not None else model


INT8_SCALE = ".int8_scale"


def _check_placement_options(kernel_size, density, target_count):
    """The generator's placement options, checked before the network runs (one line each, ArgumentError)."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ArgumentError(f"kernel_size must be an integer >= 1 (pixels), got {kernel_size!r}")
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not (math.isfinite(density)
                                                                                  and density > 0):
        raise ArgumentError(f"density must be a positive finite number, got {density!r}")
    if target_count is not None and (isinstance(target_count, bool) or not isinstance(target_count, int)
                                     or target_count < MIN_TARGET_COUNT):
        raise ArgumentError(f"target_count must be an integer >= {MIN_TARGET_COUNT}, got {target_count!r}")


def _quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: weight ~= q * scale, q (same shape) int8, scale (C_out,) float32."""
    flat = weight.reshape(weight.shape[0], -1)
    scale = flat.abs().amax(1).clamp(min=1e-12) / 127
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(weight.shape).contiguous(), scale.contiguous()


def _dequantize_int8(state: dict) -> dict:
    """Undo :func:`_quantize_int8` for every tensor that has a ``<name>.int8_scale`` companion."""
    out = {}
    for k, v in state.items():
        if k.endswith(INT8_SCALE):
            continue
        scale = state.get(k + INT8_SCALE)
        out[k] = v if scale is None else (v.float().reshape(v.shape[0], -1) * scale[:, None]).reshape(v.shape)
    return out


def _tic(device) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _toc(device, tic: float) -> float:
    return _tic(device) - tic
