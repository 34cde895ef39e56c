"""Image input and output: every image enters gilab as a float32 (3, H, W) tensor in [0, 1].

    image = load_image("photo.jpg")        # (3, H, W), float32, [0, 1], EXIF orientation applied
    image = to_tensor_image(array)         # the same from a PIL image, an HWC array or a tensor
    save_image(render, "out/render.png")   # clamped, 8-bit PNG, written atomically
    image = default_image()                # the photograph of Grace Hopper that ships with matplotlib

Conventions, chosen once here so that no other module has to:
- Transparency (RGBA, LA, PA, a palette or a grey level marked transparent) is composited over a background,
  **white** (1, 1, 1) unless you pass another. The Gaussians then fit what a viewer shows on a white page.
- 16-bit greyscale keeps its precision (value / 65535). Pillow decodes 16-bit *RGB* PNGs at 8 bits per
  channel; gilab warns when that happens.
- Pixel values are taken as stored: no ICC colour management, no gamma conversion (the papers do the same).
- Integer images are scaled by their type's maximum: uint8 / 255, uint16 / 65535, bool as {0, 1}; other
  integer types (int8, int32, int64, ...) are refused, since their range says nothing about white.
- Float images must already lie in [0, 1] and be finite: values within 1e-3 of the range (rounding) are
  clipped silently; anything further out, NaN or infinity is refused (files too: a float TIFF with values
  above 1 is refused rather than clipped).
- Images larger than ``max_pixels`` (default 50 megapixels, or the ``GILAB_MAX_PIXELS`` environment variable)
  are refused before they are decoded: a 50 MP image is already 600 MB as float32 (3, H, W).

Every user mistake (a missing, empty, truncated or non-image file, a too-large image, a wrong shape, dtype or
value range) raises :class:`gilab.errors.ImageError` with one line that names the file and the reason.
:func:`as_image` is the door every public function (``fit``, the generator, the codec) takes images through.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .errors import ImageError
from .files import atomic_path

__all__ = ["DEFAULT_MAX_PIXELS", "as_image", "default_image", "load_image", "max_pixels_limit", "save_image",
           "to_tensor_image"]

DEFAULT_MAX_PIXELS = 50_000_000
WHITE = (1.0, 1.0, 1.0)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$GILAB_MAX_PIXELS``, else 50,000,000."""
    if max_pixels is not None:
        return max_pixels
    env = os.environ.get("GILAB_MAX_PIXELS", "").strip()
    if not env:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(env))  # accepts "50e6" as well as "50000000"
    except ValueError:
        value = 0
    if value <= 0:
        raise ImageError(f"GILAB_MAX_PIXELS must be a positive number of pixels, got {env!r}")
    return value


def _error(source, reason: str) -> ImageError:
    """An ImageError whose message is exactly one line: '<file>: <reason>'."""
    return ImageError(" ".join(f"{source}: {reason}".split()))


def load_image(path, max_pixels: int | None = None, background=WHITE) -> Tensor:
    """Read an image file as a float32 tensor (3, H, W) in [0, 1].

    Any format Pillow reads. Greyscale (1-bit, 8-bit, 16-bit) is repeated over the three channels; palette
    images are expanded; transparency is composited over ``background`` (default **white**); the EXIF
    orientation is applied (a JPEG with orientation 6 comes back with H and W swapped, as a viewer shows it).
    Multi-frame files give their first frame.

    Args:
        path: the image file (str or path-like).
        max_pixels: refuse images with more than this many pixels (H * W) before decoding them;
            default ``$GILAB_MAX_PIXELS`` or 50,000,000.
        background: RGB in [0, 1] that transparent pixels are composited over.

    Returns:
        float32 tensor (3, H, W), values in [0, 1], on the CPU.

    Raises:
        ImageError: the file is missing, empty, truncated, not an image, or over the pixel limit.
    """
    path = Path(os.fspath(path))
    limit = max_pixels_limit(max_pixels)
    if not path.exists():
        raise _error(path, "no such file")
    if path.is_dir():
        raise _error(path, "is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise _error(path, "the file is empty")
        with warnings.catch_warnings():
            # gilab's own limit (checked before decoding) replaces Pillow's decompression-bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_size(path, im.size, limit)
                im.load()
                image = _orient(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise _error(path, f"over Pillow's decompression-bomb limit ({exc})") from None
    except UnidentifiedImageError:
        raise _error(path, "not an image file Pillow can read") from None
    except PermissionError:
        raise _error(path, "permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated") or SyntaxError.
        detail = str(exc) or type(exc).__name__
        hint = "" if "truncat" in detail.lower() else "; is the file truncated or corrupt?"
        raise _error(path, f"cannot decode the image ({detail}){hint}") from None
    if _is_16bit_rgb_png(path):
        warnings.warn(f"{path}: 16-bit RGB PNG; Pillow decodes it at 8 bits per channel", stacklevel=2)
    return _pil_to_tensor(image, background, source=path)


def _check_size(source, size: tuple[int, int], limit: int):
    width, height = size
    if width <= 0 or height <= 0:
        raise _error(source, f"the image is empty ({width}x{height} pixels)")
    if width * height > limit:
        raise _error(source, f"{width}x{height} = {width * height:,} pixels is over the limit of {limit:,} "
                     "(pass max_pixels= or set GILAB_MAX_PIXELS to allow it)")


def _orient(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored, as image viewers do."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a malformed EXIF tag must not make a decodable image unreadable
        return im.copy()


def _is_16bit_rgb_png(path: Path) -> bool:
    """Whether the PNG header says 16 bits per channel with colour (colour type 2 = RGB, 6 = RGBA)."""
    with open(path, "rb") as f:
        head = f.read(26)
    return len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[24] == 16 and head[25] in (2, 6)


def _pil_to_tensor(im: Image.Image, background=WHITE, source="<PIL image>") -> Tensor:
    """(3, H, W) float32 in [0, 1] from a loaded PIL image of any mode."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_tensor(im, background, source)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    try:
        im = im.convert("RGBA" if has_alpha else "RGB")
    except (ValueError, OSError) as exc:
        raise _error(source, f"cannot convert image mode {mode!r} to RGB ({exc})") from None
    array = np.asarray(im, dtype=np.float32) / 255.0
    return _hwc_to_tensor(array, background)


def _high_depth_to_tensor(im: Image.Image, background, source="<PIL image>") -> Tensor:
    """16-bit ('I;16*', and 'I' as PNG decoders produce it) and float ('F') greyscale, at full precision."""
    raw = np.asarray(im)
    if im.mode == "F":
        grey = _checked_float(raw.astype(np.float32), source)  # float images must be in [0, 1]
    else:
        grey = np.clip(raw.astype(np.float32), 0, 65535) / 65535.0
    channels = [grey, grey, grey]
    transparent = im.info.get("transparency")
    if isinstance(transparent, int):  # a PNG tRNS chunk marks one grey level as transparent
        channels.append((raw != transparent).astype(np.float32))
    return _hwc_to_tensor(np.stack(channels, axis=-1), background)


def _hwc_to_tensor(array: np.ndarray, background=WHITE) -> Tensor:
    """(H, W, 3 or 4) float32 in [0, 1] -> (3, H, W); a 4th channel is alpha, composited over ``background``."""
    if array.shape[-1] == 4:
        bg = _background(background)
        alpha = array[..., 3:4]
        array = array[..., :3] * alpha + bg * (1.0 - alpha)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))


def _background(background) -> np.ndarray:
    bg = np.asarray(background, dtype=np.float32).reshape(-1)
    if bg.shape != (3,) or not np.all((bg >= 0) & (bg <= 1)):
        raise ValueError(f"background must be three values in [0, 1] (RGB), got {background!r}")
    return bg


def to_tensor_image(x, max_pixels: int | None = None, background=WHITE) -> Tensor:
    """Any image-like input as a float32 tensor (3, H, W) in [0, 1].

    Accepts:
        - a path (str or path-like): :func:`load_image`;
        - a PIL image (any mode, as :func:`load_image` treats it; no EXIF rotation, it is already decoded);
        - a numpy array, HWC (H, W, C) or HW, C in {1, 3, 4};
        - a torch tensor, CHW (C, H, W) or HW, C in {1, 3, 4}; HWC is also accepted when the first axis
          cannot be channels. The result stays on the tensor's device.
    uint8 is divided by 255, uint16 by 65535, bool gives {0, 1}; floats must already be in [0, 1]
    (a tolerance of 1e-3 for rounding, then clamped). One channel is repeated; a 4th channel is alpha,
    composited over ``background`` (default white).

    Raises:
        ImageError: an unsupported shape or dtype, floats outside [0, 1], or (for paths) see :func:`load_image`.
    """
    if isinstance(x, (str, os.PathLike)):
        return load_image(x, max_pixels=max_pixels, background=background)
    if isinstance(x, Image.Image):
        _check_size("<PIL image>", x.size, max_pixels_limit(max_pixels))
        return _pil_to_tensor(x, background)
    if isinstance(x, Tensor):
        device = x.device
        t = x.detach()
        if t.is_floating_point():
            t = t.float()  # numpy has no bfloat16
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)  # torch's CHW convention first
        return _array_to_tensor(t.cpu().numpy(), "<tensor>", max_pixels, background).to(device)
    if isinstance(x, np.ndarray):
        return _array_to_tensor(x, "<array>", max_pixels, background)
    raise ImageError(f"cannot read an image from a {type(x).__name__}: pass a path, a PIL image, "
                     "a numpy array (H, W, C) or a tensor (C, H, W)")


def _array_to_tensor(a: np.ndarray, source: str, max_pixels, background) -> Tensor:
    """HWC / HW array of any supported dtype -> (3, H, W) float32 in [0, 1]."""
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise _error(source, f"expected an image (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; got shape {a.shape}")
    _check_size(source, (a.shape[1], a.shape[0]), max_pixels_limit(max_pixels))
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.floating):
        a = _checked_float(a.astype(np.float32), source)
    else:
        raise _error(source, f"unsupported dtype {a.dtype} (use uint8, uint16, bool or float in [0, 1])")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return _hwc_to_tensor(a, background)


def _checked_float(a: np.ndarray, source) -> np.ndarray:
    """A float array in [0, 1] (within 1e-3, then clipped); NaN, infinity or values further out are refused."""
    finite = np.isfinite(a)
    if not finite.all():
        raise _error(source, f"{int((~finite).sum())} pixel value(s) are NaN or infinite")
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise _error(source, f"float values must lie in [0, 1], got [{lo:g}, {hi:g}] (divide 8-bit values by 255)")
    return np.clip(a, 0.0, 1.0)


def as_image(x, max_pixels: int | None = None) -> Tensor:
    """The image a public function was given, checked: (3, H, W) floating point, finite, in [0, 1].

    A floating-point (3, H, W) tensor keeps its dtype and device (checked and clipped within the 1e-3
    tolerance); everything else (paths, PIL images, arrays, integer or HWC tensors) goes through
    :func:`to_tensor_image` and comes back float32.

    Raises:
        ImageError: an empty image, a wrong shape or dtype, NaN or infinity, values outside [0, 1].
    """
    if not (isinstance(x, Tensor) and x.is_floating_point() and x.ndim == 3 and x.shape[0] == 3):
        return to_tensor_image(x, max_pixels=max_pixels)
    _check_size("<tensor>", (x.shape[2], x.shape[1]), max_pixels_limit(max_pixels))
    t = x.detach()
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        raise _error("<tensor>", f"{int((~finite).sum())} pixel value(s) are NaN or infinite")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise _error("<tensor>", f"float values must lie in [0, 1], got [{lo:g}, {hi:g}] (divide 8-bit values by 255)")
    return t.clamp(0, 1) if lo < 0 or hi > 1 else t


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) float tensor -> (H, W, 3) uint8 array: clamped to [0, 1] (NaN becomes 0) and rounded to the
    nearest of 256 levels."""
    t = torch.nan_to_num(image.detach().to("cpu", torch.float32), nan=0.0).clamp(0, 1)
    return (t * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def save_image(image: Tensor, path) -> Path:
    """Write a (3, H, W) image in [0, 1] as an 8-bit file, PNG unless the suffix names another format.

    Values are clamped to [0, 1] (NaN becomes 0) and rounded to the nearest of 256 levels. The file appears
    atomically (written beside it, then renamed), so a reader never sees half an image; missing parent
    folders are created.

    Args:
        image: tensor (3, H, W) or (1, H, W) or (H, W), any float dtype and device.
        path: where to write; ".png" (default when there is no suffix), or ".jpg", ".webp", ... as Pillow knows them.

    Returns:
        The path written.
    """
    path = Path(os.fspath(path))
    t = torch.as_tensor(image).detach().to("cpu", torch.float32)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects a (3, H, W) image, got shape {tuple(t.shape)}")
    array = to_uint8(t.expand(3, -1, -1))
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG") if path.suffix else "PNG"
    if path.is_dir():
        raise _error(path, "is a directory; give a file name for the image")
    with atomic_path(path) as tmp:
        Image.fromarray(array, "RGB").save(tmp, format=fmt)
    return path


def default_image() -> Tensor:
    """The default photograph: Grace Hopper, (3, 600, 512) float32 in [0, 1]. No download.

    matplotlib ships it as ``mpl-data/sample_data/grace_hopper.jpg``; it is found with
    ``matplotlib.cbook.get_sample_data`` (which returns the path when ``asfileobj=False``).
    """
    from matplotlib import cbook

    return load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
