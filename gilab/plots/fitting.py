"""Pictures of a fit: PSNR against time, and the target beside the render."""

from __future__ import annotations

import matplotlib
from torch import Tensor


def plot_history(history, ax=None, x: str = "seconds", label: str | None = None, log_x: bool | None = None):
    """PSNR (dB) against ``x`` = "seconds" (init included) or "iteration". Returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    xs = history.seconds if x == "seconds" else history.iteration
    ax.plot(xs, history.psnr, label=label)
    if (log_x if log_x is not None else x == "seconds") and min(xs) > 0:
        log_axis(ax)
    ax.set_xlabel("time (s, init included)" if x == "seconds" else "iteration")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(True, alpha=0.3)
    if label:
        ax.legend()
    return ax


def log_axis(ax, axis: str = "x"):
    """A log axis labelled 1, 2, 5, 10, 20, ..., 1k, 2k (plain numbers, not powers of ten)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    # 1k, 2k, 5k, 10k rather than 1000 ... 10000: long labels run into each other on a four-decade axis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def to_numpy_image(image: Tensor):
    """(3, H, W) tensor -> (H, W, 3) float array clamped to [0, 1], for imshow."""
    return image.detach().clamp(0, 1).permute(1, 2, 0).cpu().float().numpy()


def side_by_side(images: dict[str, Tensor], width: float = 4.0):
    """A row of images with titles, e.g. {"target": gt, "render 31.2 dB": out}. Returns the Figure."""
    import matplotlib.pyplot as plt

    first = next(iter(images.values()))
    aspect = first.shape[-2] / first.shape[-1]
    fig, axes = plt.subplots(1, len(images), figsize=(width * len(images), width * aspect + 0.4),
                             layout="constrained", squeeze=False)
    for ax, (title, image) in zip(axes[0], images.items()):
        ax.imshow(to_numpy_image(image), interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    return fig


def use_headless_backend():
    """Switch matplotlib to Agg unless a GUI or inline backend was chosen (CLI and scripts)."""
    if matplotlib.get_backend().lower() not in ("agg",) and not _in_notebook():
        matplotlib.use("Agg")


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False
