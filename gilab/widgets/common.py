"""Display helpers the widgets share: tensors to PNG/JPEG bytes and a fit's summary figure (ellipses are drawn
by :mod:`gilab.plots.ellipses`, re-exported here). They work without ipywidgets."""

from __future__ import annotations

import io

import numpy as np
from torch import Tensor

from ..io import to_uint8 as image_to_uint8
from ..plots.ellipses import draw_ellipses, ellipse_outlines

__all__ = ["draw_ellipses", "ellipse_outlines", "image_to_bytes", "image_to_png", "image_to_uint8", "show_fit"]


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


def show_fit(result, target: Tensor, x: str = "iteration", width: float = 3.2):
    """The target, the fitted render (with its PSNR), the error |render - target| and the PSNR curve.

    ``result`` is a :class:`~gilab.FitResult`. Pictures up to 1.6 times wider than tall sit in one row with the
    curve; wider ones (a panorama) get a row each at the figure's full width, the curve below them, so that
    they are never squeezed to a strip. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from ..plots.fitting import plot_history, to_numpy_image

    height, w = target.shape[-2:]
    aspect = height / w
    if w <= 1.6 * height:
        fig, axes = plt.subplots(1, 4, figsize=(4 * width, width * aspect + 0.5), layout="constrained",
                                 gridspec_kw={"width_ratios": [1, 1, 1, 1.3]})
    else:  # one picture per row, 4 * width wide; the curve keeps a readable height below them
        full = 4 * width
        rows = [full * aspect + 0.35] * 3 + [max(2.4, width * 0.8)]
        fig, axes = plt.subplots(4, 1, figsize=(full, sum(rows)), layout="constrained",
                                 gridspec_kw={"height_ratios": rows})
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
    """What the widgets that work in a background thread share: Stop, ``running``/``stopped``, ``wait()`` and
    ``await``. A subclass sets ``_thread`` (a started :class:`threading.Thread`), ``_stop`` (a
    :class:`threading.Event` its work checks), ``error`` (what the work raised, or None), ``stop_button`` and
    ``status`` (ipywidgets), and ``_outcome()`` (what ``wait()`` and ``await`` return).

    **In a notebook, wait with** ``await widget`` **rather than** ``widget.wait()``. A button click is a comm
    message that the kernel's main thread handles between cells; ``wait()`` blocks that thread, so under
    *Run All* a click on Stop would only be handled once the work had ended on its own. ``await`` hands the
    thread back to the kernel's event loop while it waits, and ipykernel (7.4 and later) dispatches comm
    messages while a cell awaits: the click reaches :meth:`stop` at once, the work ends after its current
    step, and the awaiting cell returns. In nbclient and nbval runs (nobody clicks) the same cell simply
    waits for the end, so the saved outputs and the cells below see the finished work. The kernel's
    interrupt button also stops the work while a cell awaits it.
    """

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

    def _outcome(self):  # pragma: no cover - each widget says what it returns
        raise NotImplementedError

    def _join(self, timeout: float | None, what: str):
        """Block until the work has ended; re-raise its error. In a notebook prefer ``await`` (see the class)."""
        if self._thread is None:
            raise RuntimeError(f"{what} was not started: call .start() first")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{what} is still running after {timeout} s")
        if self.error is not None:
            raise self.error

    async def finished(self, poll: float = 0.05):
        """Wait until the work has ended without blocking the kernel (``await widget.finished()``, or simply
        ``await widget``); returns what :meth:`wait` returns. Cancelling the wait (the kernel's interrupt
        button) stops the work."""
        import asyncio

        if self._thread is None:
            raise RuntimeError("not started: call .start() first")
        try:
            while self._thread.is_alive():
                await asyncio.sleep(poll)  # the event loop is free: widget messages (Stop) are handled
        except BaseException:  # CancelledError or KeyboardInterrupt: end the work too, then let it propagate
            self.stop()
            raise
        if self.error is not None:
            raise self.error
        return self._outcome()

    def __await__(self):
        return self.finished().__await__()
