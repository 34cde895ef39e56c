"""Display helpers the widgets share: tensors to PNG/JPEG bytes, ellipse outlines, a fit's summary figure.
They work without ipywidgets."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from torch import Tensor

from ..gaussians import CUTOFF_RADIUS, Gaussians2D


def image_to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) float tensor -> (H, W, 3) uint8 array, clamped to [0, 1] and rounded."""
    t = torch.nan_to_num(image.detach().to("cpu", torch.float32), nan=0.0).clamp(0, 1)
    return (t * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def image_to_bytes(image, format: str = "png", max_side: int | None = None, quality: int = 90) -> bytes:
    """PNG or JPEG bytes of a (3, H, W) tensor in [0, 1] (or an (H, W, 3) uint8 array / PIL image).

    For ``widgets.Image``: PNG keeps lines crisp, JPEG keeps photographs small (a saved notebook keeps the
    widgets' last pictures). ``max_side`` shrinks larger images (aspect kept) so that big renders stay quick to send.
    """
    from PIL import Image

    if isinstance(image, Tensor):
        image = image_to_uint8(image)
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image), "RGB")
    if max_side is not None and max(pil.size) > max_side:
        f = max_side / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * f)), max(1, round(pil.height * f))), Image.LANCZOS)
    buf = io.BytesIO()
    if format.lower() in ("jpeg", "jpg"):
        pil.save(buf, format="JPEG", quality=quality)
    else:
        pil.save(buf, format="PNG", compress_level=1)  # fast: the bytes only travel to the browser
    return buf.getvalue()


def image_to_png(image, max_side: int | None = None) -> bytes:
    """PNG bytes of an image, for ``widgets.Image`` (see :func:`image_to_bytes`)."""
    return image_to_bytes(image, "png", max_side)


def ellipse_outlines(gaussians: Gaussians2D, radius: float = CUTOFF_RADIUS, points: int = 64) -> np.ndarray:
    """(N, points, 2) pixel coordinates (x, y) of each Gaussian's ellipse at Mahalanobis ``radius``.

    The default radius, sqrt(2 ln 255) = 3.33, is the cutoff: outside it a Gaussian of opacity 1 adds nothing.
    With Sigma = L L^T (Cholesky), the ellipse is mu + radius * L (cos t, sin t).
    """
    g = gaussians.detach().to("cpu", torch.float64).to_cholesky()
    l1, l2, l3 = g.cholesky.unbind(-1)
    t = torch.linspace(0, 2 * math.pi, points, dtype=torch.float64)
    c, s = torch.cos(t) * radius, torch.sin(t) * radius
    x = g.means[:, :1] + l1[:, None] * c
    y = g.means[:, 1:] + l2[:, None] * c + l3[:, None] * s
    return torch.stack([x, y], -1).numpy()


def draw_ellipses(ax, gaussians: Gaussians2D, radius: float = CUTOFF_RADIUS, color="white", linewidth=0.8,
                  alpha=0.8, max_count: int = 2000, centers: bool = False):
    """Draw each Gaussian's ellipse at Mahalanobis ``radius`` (default: the cutoff) onto an ``imshow`` Axes.

    Sets of more than ``max_count`` Gaussians are thinned to an even sample so that the plot stays readable.
    """
    from matplotlib.collections import LineCollection

    if len(gaussians) > max_count:
        gaussians = gaussians[torch.linspace(0, len(gaussians) - 1, max_count).round().long()]
    outlines = ellipse_outlines(gaussians, radius) - 0.5  # imshow puts pixel (i, j)'s centre at (j, i), not (j+.5, i+.5)
    limits = ax.get_xlim(), ax.get_ylim()
    ax.add_collection(LineCollection(outlines, colors=color, linewidths=linewidth, alpha=alpha))
    if centers:
        means = gaussians.means.detach().cpu().numpy() - 0.5
        ax.plot(means[:, 0], means[:, 1], "+", color=color, alpha=alpha, markersize=4)
    ax.set_xlim(*limits[0])  # the image's frame, not the ellipses' extent
    ax.set_ylim(*limits[1])
    return ax


def show_fit(result, target: Tensor, x: str = "iteration", width: float = 3.2):
    """One row: the target, the fitted render (with its PSNR), the error |render - target| and the PSNR curve.

    ``result`` is a :class:`~gilab.FitResult`. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from ..plots.fitting import plot_history, to_numpy_image

    height, w = target.shape[-2:]
    fig, axes = plt.subplots(1, 4, figsize=(4 * width, width * height / w + 0.5), layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.3]})
    error = (result.image.detach().cpu().clamp(0, 1) - target.cpu()).abs().mean(0)
    panels = {"target": to_numpy_image(target),
              f"{len(result.gaussians):,} Gaussians, {result.psnr:.2f} dB": to_numpy_image(result.image)}
    for ax, (title, picture) in zip(axes, panels.items()):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title)
    axes[2].imshow(error.numpy(), cmap="magma", vmin=0, vmax=max(0.02, float(error.flatten().quantile(0.995))))
    axes[2].set_title("|render - target| (bright: worse)")
    for ax in axes[:3]:
        ax.axis("off")
    plot_history(result.history, ax=axes[3], x=x)
    axes[3].set_title(f"{result.iterations} iterations, {result.param}")
    return fig


def _hex_to_rgb(value: str) -> tuple[float, float, float]:
    value = value.lstrip("#")
    if len(value) == 3:
        value = "".join(ch * 2 for ch in value)
    return tuple(int(value[i:i + 2], 16) / 255 for i in (0, 2, 4))


def _widgets():
    try:
        import ipywidgets
    except ImportError as exc:  # pragma: no cover - ipywidgets is a dependency
        raise ImportError("gilab.widgets needs ipywidgets (pip install ipywidgets)") from exc
    return ipywidgets


def _render(g, height, width, blend, backend, scale):
    from .. import render

    return render(g, height, width, blend=blend, backend=backend, scale=scale)


class BackgroundWork:
    """What the widgets that work in a background thread share: Stop, ``running``/``stopped``, and the join of
    ``wait()``. A subclass sets ``_thread`` (a started :class:`threading.Thread`), ``_stop`` (a
    :class:`threading.Event` its work checks), ``error`` (what the work raised, or None), ``stop_button`` and
    ``status`` (ipywidgets)."""

    def stop(self):
        """Ask the work to stop at its next check (the Stop button calls this)."""
        self._stop.set()
        self.stop_button.disabled = True
        if self.running:
            self.status.value = "stopping..."

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        """Whether Stop (or :meth:`stop`) ended the work early."""
        return self._stop.is_set()

    def _join(self, timeout: float | None, what: str):
        """Block until the work has ended; re-raise its error. Call it in a later cell than the start: while it
        waits, the kernel cannot handle the Stop button."""
        if self._thread is None:
            raise RuntimeError(f"{what} was not started: call .start() first")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{what} is still running after {timeout} s")
        if self.error is not None:
            raise self.error
