"""A set of 2D Gaussians: the data structure every part of gilab passes around.

Conventions (docs/method.md, section 2):

- ``means``: (N, 2) float, pixels, as (x, y). Pixel (row i, column j) covers
  [j, j+1) x [i, i+1) and is sampled at its centre (j + 0.5, i + 0.5).
- The covariance is stored in one of two parametrisations:
  * Cholesky ``(l1, l2, l3)``: L = [[l1, 0], [l2, l3]], Sigma = L L^T, pixels;
  * scale-rotation: ``scales`` (N, 2) pixels (standard deviations along the
    rotated axes) and ``rotations`` (N,) radians, Sigma = R S S^T R^T with
    R = [[cos, -sin], [sin, cos]].
- ``colors``: (N, 3) float, linear in the output image (unclamped).
- ``opacities``: (N,) float; GaussianImage fixes them to 1.

Conics are the inverse covariances, packed as (a, b, c) for Q = [[a, b], [b, c]].
Every method is differentiable and follows the device and dtype of the tensors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .errors import FileFormatError, NonFiniteError
from .files import atomic_path

#: File format written by :meth:`Gaussians2D.save` (safetensors + JSON metadata).
FORMAT_NAME = "gilab.gaussians"
FORMAT_VERSION = 1


@dataclass
class Gaussians2D:
    """N anisotropic 2D Gaussians in pixel units.

    Build one with :meth:`from_cholesky` or :meth:`from_scale_rotation`.
    ``size`` optionally records the (height, width) canvas the set was made
    for, so that a saved file can be rendered without knowing it.
    """

    means: Tensor
    colors: Tensor
    opacities: Tensor
    cholesky: Tensor | None = None
    scales: Tensor | None = None
    rotations: Tensor | None = None
    size: tuple[int, int] | None = None

    # ----------------------------------------------------------------- build
    @classmethod
    def from_cholesky(cls, means: Tensor, cholesky: Tensor, colors: Tensor,
                      opacities: Tensor | None = None, size=None) -> Gaussians2D:
        """means (N,2) px, cholesky (N,3) = (l1, l2, l3) px, colors (N,3), opacities (N,)."""
        return cls(means, colors, _default_opacities(means, opacities), cholesky=cholesky, size=_size(size))

    @classmethod
    def from_scale_rotation(cls, means: Tensor, scales: Tensor, rotations: Tensor, colors: Tensor,
                            opacities: Tensor | None = None, size=None) -> Gaussians2D:
        """means (N,2) px, scales (N,2) px, rotations (N,) radians, colors (N,3), opacities (N,)."""
        return cls(means, colors, _default_opacities(means, opacities),
                   scales=scales, rotations=rotations, size=_size(size))

    @classmethod
    def empty(cls, device=None, dtype=torch.float32) -> Gaussians2D:
        z = torch.zeros
        return cls.from_cholesky(z(0, 2, device=device, dtype=dtype), z(0, 3, device=device, dtype=dtype),
                                 z(0, 3, device=device, dtype=dtype))

    def __post_init__(self):
        if (self.cholesky is None) == (self.scales is None):
            raise ValueError("give exactly one covariance parametrisation: cholesky, or scales + rotations")
        if self.scales is not None and self.rotations is None:
            raise ValueError("scales need rotations (N,) in radians")
        n = self.means.shape[0]
        expected = {"means": (n, 2), "colors": (n, 3), "opacities": (n,)}
        if self.cholesky is not None:
            expected["cholesky"] = (n, 3)
        else:
            expected.update(scales=(n, 2), rotations=(n,))
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"{name} must have shape {shape}, got {got}")

    def check(self, what: str = "Gaussians") -> Gaussians2D:
        """Raise unless every tensor is floating point and finite, and every covariance has a positive
        determinant (the conic would be infinite). Returns ``self``, so ``g = g.check()`` reads well.

        Raises:
            NonFiniteError: NaN or infinity in a tensor, or a degenerate covariance; the message counts them.
            FileFormatError: a tensor that is not floating point.
        """
        for name, t in self._tensors().items():
            if not t.is_floating_point():
                raise FileFormatError(f"{what}: {name} must be floating point, got {t.dtype}")
            bad = int((~torch.isfinite(t.detach())).sum())
            if bad:
                raise NonFiniteError(f"{what}: {bad} non-finite value(s) (NaN or inf) in {name}")
        degenerate = int((~torch.isfinite(self.conics().detach())).any(-1).sum())
        if degenerate:
            raise NonFiniteError(f"{what}: {degenerate} Gaussian(s) with a zero covariance (their conic is "
                                 "infinite); widen them or drop them")
        return self

    def determinant_factor(self) -> Tensor:
        """(N,) l1 l3 or s1 s2: the square root of each covariance's determinant, pixels squared."""
        if self.cholesky is not None:
            return self.cholesky[:, 0] * self.cholesky[:, 2]
        return self.scales[:, 0] * self.scales[:, 1]

    # ------------------------------------------------------------ properties
    @property
    def param(self) -> str:
        """``"cholesky"`` or ``"rs"``: the parametrisation stored."""
        return "cholesky" if self.cholesky is not None else "rs"

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def __repr__(self) -> str:
        size = f", size={self.size}" if self.size else ""
        return f"Gaussians2D(n={len(self)}, param={self.param!r}, dtype={self.dtype}, device={self.device}{size})"

    # ------------------------------------------------------------ covariance
    def covariances(self) -> Tensor:
        """(N, 2, 2) covariance matrices, pixels squared."""
        sxx, sxy, syy = self._cov_terms()
        return torch.stack([torch.stack([sxx, sxy], -1), torch.stack([sxy, syy], -1)], -2)

    def conics(self) -> Tensor:
        """(N, 3) inverse covariances (a, b, c), Q = [[a, b], [b, c]], 1 / pixels squared.

        The determinant is taken from the parametrisation ((l1 l3)^2 or (s1 s2)^2),
        which stays accurate for near-singular covariances where Sxx Syy - Sxy^2 cancels.
        """
        sxx, sxy, syy = self._cov_terms()
        det = self.determinant_factor() ** 2
        return torch.stack([syy / det, -sxy / det, sxx / det], -1)

    def _cov_terms(self) -> tuple[Tensor, Tensor, Tensor]:
        if self.cholesky is not None:
            l1, l2, l3 = self.cholesky.unbind(-1)
            return l1 * l1, l1 * l2, l2 * l2 + l3 * l3
        s1, s2 = self.scales.unbind(-1)
        c, s = torch.cos(self.rotations), torch.sin(self.rotations)
        v1, v2 = s1 * s1, s2 * s2
        return v1 * c * c + v2 * s * s, (v1 - v2) * s * c, v1 * s * s + v2 * c * c

    # ---------------------------------------------------------- conversions
    def to_cholesky(self) -> Gaussians2D:
        """The same Gaussians with a Cholesky factor (l1 > 0, l3 >= 0)."""
        if self.cholesky is not None:
            return self
        sxx, sxy, syy = self._cov_terms()
        l1 = torch.sqrt(sxx)
        l2 = sxy / l1
        l3 = torch.sqrt(torch.clamp(syy - l2 * l2, min=0))
        return self._with(cholesky=torch.stack([l1, l2, l3], -1), scales=None, rotations=None)

    def to_scale_rotation(self) -> Gaussians2D:
        """The same Gaussians as scales (s1 >= s2 >= 0) and a rotation in (-pi/2, pi/2]."""
        if self.scales is not None:
            return self
        sxx, sxy, syy = self._cov_terms()
        mid = 0.5 * (sxx + syy)
        radius = torch.sqrt((0.5 * (sxx - syy)) ** 2 + sxy * sxy)
        s1 = torch.sqrt(mid + radius)
        s2 = torch.sqrt(torch.clamp(mid - radius, min=0))
        theta = 0.5 * torch.atan2(2 * sxy, sxx - syy)
        return self._with(scales=torch.stack([s1, s2], -1), rotations=theta, cholesky=None)

    def scaled(self, factor: float) -> Gaussians2D:
        """Zoom by ``factor``: means and standard deviations times ``factor`` (covariances times its square)."""
        size = None if self.size is None else (round(self.size[0] * factor), round(self.size[1] * factor))
        if self.cholesky is not None:
            return self._with(means=self.means * factor, cholesky=self.cholesky * factor, size=size)
        return self._with(means=self.means * factor, scales=self.scales * factor, size=size)

    def to(self, *args, **kwargs) -> Gaussians2D:
        """Move every tensor, as :meth:`torch.Tensor.to`."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Gaussians2D:
        return self._map(Tensor.detach)

    def clone(self) -> Gaussians2D:
        return self._map(Tensor.clone)

    def __getitem__(self, index) -> Gaussians2D:
        """A subset, e.g. ``g[mask]`` or ``g[:100]``."""
        return self._map(lambda t: t[index])

    def _map(self, fn) -> Gaussians2D:
        fields = {k: (fn(v) if isinstance(v, Tensor) else v) for k, v in self._fields().items()}
        return Gaussians2D(**fields)

    def _with(self, **changes) -> Gaussians2D:
        return Gaussians2D(**{**self._fields(), **changes})

    def _tensors(self) -> dict[str, Tensor]:
        return {k: v for k, v in self._fields().items() if isinstance(v, Tensor)}

    def _fields(self) -> dict:
        return {"means": self.means, "colors": self.colors, "opacities": self.opacities, "cholesky": self.cholesky,
                "scales": self.scales, "rotations": self.rotations, "size": self.size}

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | Path) -> Path:
        """Write a safetensors file (no pickle): tensors ``means``, ``colors``, ``opacities`` and
        ``cholesky`` or ``scales`` + ``rotations``; metadata ``format`` = "gilab.gaussians",
        ``version`` = 1, ``param``, and ``size`` ([height, width] or null) as JSON."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self._tensors().items()}
        meta = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "param": self.param,
                "size": json.dumps(list(self.size) if self.size else None)}
        with atomic_path(path) as tmp:  # an interrupted save never leaves a half-written file
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, device=None) -> Gaussians2D:
        """Read a file written by :meth:`save` (safetensors: no code runs while reading).

        Everything is checked before it is used: the format name and version, exactly the tensors of the
        recorded parametrisation with consistent shapes, floating-point data (float16 and bfloat16 are read
        as float32; float64 stays float64), finite values, and a ``size`` of two positive integers or null.

        Raises:
            FileNotFoundError: no such file.
            FileFormatError: any other problem, as one line that names the file.
            NonFiniteError: NaN or infinity in the data.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such Gaussians file")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except Exception as exc:  # noqa: BLE001 (safetensors raises its own error types for corrupt headers)
            raise FileFormatError(f"{path}: not a gilab Gaussians file ({_one_line(exc)})") from None
        g = _from_file_contents(path, meta, tensors).check(str(path))
        return g.to(device) if device is not None else g


def _from_file_contents(path: Path, meta: dict, tensors: dict[str, Tensor]) -> Gaussians2D:
    """Validate what a Gaussians file holds and build the set; every problem is one FileFormatError line."""
    def fail(reason: str) -> FileFormatError:
        return FileFormatError(f"{path}: {reason}")

    if meta.get("format") != FORMAT_NAME:
        raise fail(f"not a gilab Gaussians file (format={meta.get('format')!r})")
    version = meta.get("version", "")
    if not version.isdigit():
        raise fail(f"malformed version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise fail(f"file version {version} is newer than this gilab (reads up to {FORMAT_VERSION}); upgrade gilab")
    param = meta.get("param") or ("cholesky" if "cholesky" in tensors else "rs")
    covariance = {"cholesky": {"cholesky"}, "rs": {"scales", "rotations"}}.get(param)
    if covariance is None:
        raise fail(f"unknown parametrisation {param!r}")
    expected = {"means", "colors", "opacities"} | covariance
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise fail(f"expected the tensors {', '.join(sorted(expected))}"
                   + (f"; missing {', '.join(missing)}" if missing else "")
                   + (f"; unexpected {', '.join(extra)}" if extra else ""))
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise fail(f"{name} must be floating point, got {t.dtype}")
    dtype = torch.float64 if all(t.dtype == torch.float64 for t in tensors.values()) else torch.float32
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    try:
        size = json.loads(meta.get("size", "null"))
    except json.JSONDecodeError:
        raise fail(f"malformed size {meta.get('size')!r}") from None
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise fail(f"size must be [height, width] in pixels or null, got {meta.get('size')!r}")
    try:
        return Gaussians2D(size=tuple(size) if size else None, **tensors)
    except ValueError as exc:  # inconsistent shapes
        raise fail(str(exc)) from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------- NDC helpers
def pixels_to_ndc(xy: Tensor, height: int, width: int) -> Tensor:
    """(..., 2) pixel (x, y) -> normalised device coordinates in (-1, 1): x_ndc = 2 x / W - 1."""
    scale = xy.new_tensor([width, height])
    return xy * 2 / scale - 1


def ndc_to_pixels(xy: Tensor, height: int, width: int) -> Tensor:
    """(..., 2) NDC -> pixels: x_pix = (x_ndc + 1) W / 2 (the papers' convention)."""
    scale = xy.new_tensor([width, height])
    return (xy + 1) * scale / 2


def pixel_centres(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """(H*W, 2) pixel-centre coordinates (x, y) = (j + 0.5, i + 0.5), row-major: where every backend samples."""
    ys = torch.arange(height, device=device, dtype=dtype) + 0.5
    xs = torch.arange(width, device=device, dtype=dtype) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)


def cutoff_sigma(opacities: Tensor) -> Tensor:
    """(N,) the largest sigma = 1/2 d^T Q d at which o * exp(-sigma) >= 1/255, i.e. ln(255 o).

    Negative where 255 o < 1: such a Gaussian contributes nowhere.
    """
    return torch.log(opacities * 255.0)


CUTOFF = 1.0 / 255.0
#: Mahalanobis radius of the cutoff ellipse at opacity 1: sqrt(2 ln 255) = 3.33.
CUTOFF_RADIUS = math.sqrt(2 * math.log(255.0))


def _default_opacities(means: Tensor, opacities: Tensor | None) -> Tensor:
    if opacities is None:
        return torch.ones(means.shape[0], device=means.device, dtype=means.dtype)
    return opacities


def _size(size):
    return None if size is None else (int(size[0]), int(size[1]))
