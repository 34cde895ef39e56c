"""Jupyter widgets and display helpers for the notebooks (ipywidgets 8, JupyterLab 4).

    from gilab.widgets import GaussianPlayground, FitMonitor
    GaussianPlayground()                              # sliders -> live render of a few Gaussians
    monitor = FitMonitor(image, n=2000, iters=1000)   # a fit in the background, render + PSNR curve live
    monitor.start()
    monitor                                           # (display it); the Stop button ends the fit early
    result = monitor.wait()                           # the FitResult, once the fit has ended

Both widgets draw into :class:`ipywidgets.Image` (PNG or JPEG bytes): one message per update, no matplotlib
figure to re-create in the browser, so a render reaches the screen within milliseconds of the slider.
Every part carries a CSS class (``gilab-playground``, ``gilab-pg-g0-x``, ``gilab-fit-stop``, ...) so that
tests and style sheets can find it.

The static helpers (:func:`image_to_png`, :func:`image_to_bytes`, :func:`ellipse_outlines`, :func:`draw_ellipses`, :func:`show_fit`)
work without ipywidgets.
"""

from __future__ import annotations

import io
import math
import threading
import time

import numpy as np
import torch
from torch import Tensor

from .gaussians import CUTOFF_RADIUS, Gaussians2D

__all__ = ["DEFAULT_PLAYGROUND", "FitMonitor", "GaussianPlayground", "draw_ellipses", "ellipse_outlines",
           "image_to_bytes", "image_to_png", "playground_gaussians", "show_fit"]


# ------------------------------------------------------------------ static helpers
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

    from .plots.fitting import plot_history, to_numpy_image

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


# ---------------------------------------------------------------------- playground
#: The playground's starting Gaussians, on a 160 x 240 canvas: red, green and blue, overlapping,
#: so that sum blending shows additive mixing (yellow, cyan, white) and alpha blending shows occlusion.
DEFAULT_PLAYGROUND = (
    {"x": 108.0, "y": 72.0, "s1": 26.0, "s2": 13.0, "angle": 30.0, "color": "#e6194b", "opacity": 1.0},
    {"x": 134.0, "y": 78.0, "s1": 18.0, "s2": 18.0, "angle": 0.0, "color": "#3cb44b", "opacity": 1.0},
    {"x": 118.0, "y": 96.0, "s1": 36.0, "s2": 8.0, "angle": -15.0, "color": "#4363d8", "opacity": 1.0},
)


def playground_gaussians(specs=DEFAULT_PLAYGROUND, height: int = 160, width: int = 240) -> Gaussians2D:
    """Gaussians from the playground's description: dicts with x, y, s1, s2 (pixels), angle (degrees),
    color ("#rrggbb") and opacity. ``playground_gaussians()`` is the playground's starting set, without widgets."""
    specs = list(specs)
    tensor = lambda values, *shape: torch.tensor(values, dtype=torch.float32).reshape(*shape)
    return Gaussians2D.from_scale_rotation(
        tensor([[s["x"], s["y"]] for s in specs], -1, 2),
        tensor([[s["s1"], s["s2"]] for s in specs], -1, 2),
        tensor([math.radians(s["angle"]) for s in specs], -1),
        tensor([_hex_to_rgb(s["color"]) for s in specs], -1, 3),
        tensor([s.get("opacity", 1.0) for s in specs], -1),
        size=(height, width))


class GaussianPlayground:
    """A few 2D Gaussians under sliders, rendered live with :func:`gilab.render`.

    For each Gaussian (one tab each): position x, y (pixels), standard deviations s1, s2 (pixels) along axes
    rotated by theta (degrees), opacity and colour. Below: the blend mode (sum or alpha), the cutoff
    ellipses on or off, and a readout of each Gaussian's covariance and Cholesky factor.

    Args:
        gaussians: a sequence of dicts with keys x, y, s1, s2, angle, color ("#rrggbb"), opacity
            (default :data:`DEFAULT_PLAYGROUND`).
        height, width: the canvas, pixels.
        zoom: the picture is rendered at ``zoom`` times the canvas (``gilab.render(..., scale=zoom)``):
            the Gaussians are resampled, not the pixels.
        blend: the starting blend mode, "sum" or "alpha".
        backend: the render backend ("auto" picks the fastest here).

    ``playground.widget`` is the ipywidgets box (a playground also displays itself in Jupyter).
    ``playground.gaussians()`` is the current :class:`Gaussians2D`; ``playground.render()`` its image.
    """

    def __init__(self, gaussians=DEFAULT_PLAYGROUND, height: int = 160, width: int = 240, zoom: float = 2.0,
                 blend: str = "sum", backend: str = "auto", show_ellipses: bool = True):
        w = _widgets()
        if backend == "auto":
            from .render import pick_backend

            backend = pick_backend(torch.device("cpu"), blend)
            if backend == "torch":  # no numba: for a handful of Gaussians the dense reference is the quicker one
                backend = "dense"
        self.height, self.width, self.zoom, self.backend = int(height), int(width), float(zoom), backend
        self.renders = 0  # how many pictures were sent (tests and the status line use it)
        self.last_ms = 0.0
        self.controls: list[dict] = []
        pages = []
        for i, spec in enumerate(gaussians):
            spec = {**DEFAULT_PLAYGROUND[0], **spec}
            c = {
                "x": w.FloatSlider(spec["x"], min=0, max=self.width, step=0.5, description="x (px)"),
                "y": w.FloatSlider(spec["y"], min=0, max=self.height, step=0.5, description="y (px)"),
                "s1": w.FloatSlider(spec["s1"], min=0.5, max=80, step=0.5, description="s1 (px)"),
                "s2": w.FloatSlider(spec["s2"], min=0.5, max=80, step=0.5, description="s2 (px)"),
                "angle": w.FloatSlider(spec["angle"], min=-90, max=90, step=1, description="θ (deg)"),
                "opacity": w.FloatSlider(spec["opacity"], min=0, max=1, step=0.01, description="opacity"),
                "color": w.ColorPicker(value=spec["color"], description="colour", concise=False),
            }
            for name, control in c.items():
                control.add_class(f"gilab-pg-g{i}-{name}")
                control.add_class(f"gilab-pg-{name}")
                control.observe(self._on_change, names="value")
            self.controls.append(c)
            pages.append(w.VBox(list(c.values())))
        self.tabs = w.Tab(children=pages, titles=[f"Gaussian {i}" for i in range(len(pages))])
        self.tabs.add_class("gilab-pg-tabs")
        self.blend = w.ToggleButtons(options=["sum", "alpha"], value=blend, description="blend",
                                     tooltips=["GaussianImage: C = sum of c min(1, o w), no order",
                                               "3DGS / gsplat: front to back, Gaussian 0 in front"])
        self.blend.add_class("gilab-pg-blend")
        self.ellipses = w.Checkbox(value=show_ellipses, description="show cutoff ellipses (radius 3.33)",
                                   indent=False)
        self.ellipses.add_class("gilab-pg-ellipses")
        for control in (self.blend, self.ellipses):
            control.observe(self._on_change, names="value")
        self.image = w.Image(format="png")
        self.image.add_class("gilab-pg-image")
        self.status = w.Label()
        self.status.add_class("gilab-pg-status")
        self.info = w.HTML()
        self.info.add_class("gilab-pg-info")
        left = w.VBox([self.image, self.status])
        right = w.VBox([self.tabs, self.blend, self.ellipses])
        self.widget = w.VBox([w.HBox([left, right]), self.info])
        self.widget.add_class("gilab-playground")
        self.update()

    # -------------------------------------------------------------- model
    def gaussians(self) -> Gaussians2D:
        """The Gaussians the sliders describe (rotation-scale parametrisation, float32, canvas pixels)."""
        specs = [{name: control.value for name, control in c.items()} for c in self.controls]
        return playground_gaussians(specs, self.height, self.width)

    def render(self) -> Tensor:
        """The current picture, (3, zoom * H, zoom * W), unclamped."""
        with torch.no_grad():
            return _render(self.gaussians(), self.height, self.width, blend=self.blend.value,
                           backend=self.backend, scale=self.zoom)

    # -------------------------------------------------------------- view
    def _on_change(self, change):
        self.update()

    def update(self):
        """Re-render and send the picture (called on every slider move)."""
        from PIL import Image, ImageDraw

        g = self.gaussians()
        start = time.perf_counter()
        image = self.render()
        self.last_ms = 1000 * (time.perf_counter() - start)
        pil = Image.fromarray(image_to_uint8(image), "RGB")
        if self.ellipses.value:
            draw = ImageDraw.Draw(pil)
            for i, outline in enumerate(ellipse_outlines(g) * self.zoom):
                draw.line([tuple(p) for p in outline], fill=(255, 255, 255), width=1)
                x, y = (g.means[i] * self.zoom).tolist()
                draw.line([(x - 4, y), (x + 4, y)], fill=(255, 255, 255))
                draw.line([(x, y - 4), (x, y + 4)], fill=(255, 255, 255))
                draw.text((x + 5, y + 2), str(i), fill=(255, 255, 255))
        self.image.value = image_to_png(pil)
        self.info.value = self._info_html(g)
        self.renders += 1
        # Set last, so a watcher (the browser test) knows the picture above is already the new one.
        self.status.value = (f"{self.blend.value} blending, {len(g)} Gaussians, rendered at {self.zoom:g}x in "
                             f"{self.last_ms:.1f} ms (update {self.renders})")

    def _info_html(self, g: Gaussians2D) -> str:
        chol = g.to_cholesky().cholesky.tolist()
        cov = g.covariances().tolist()
        rows = "".join(
            f"<tr><td>{i}</td><td>[[{s[0][0]:.1f}, {s[0][1]:.1f}], [{s[1][0]:.1f}, {s[1][1]:.1f}]]</td>"
            f"<td>({l[0]:.2f}, {l[1]:.2f}, {l[2]:.2f})</td></tr>"
            for i, (s, l) in enumerate(zip(cov, chol)))
        return ("<table style='font-family: monospace; font-size: 12px'>"
                "<tr><th>Gaussian</th><th>covariance Σ = R S Sᵀ Rᵀ (px²)</th>"
                "<th>Cholesky (l1, l2, l3), Σ = L Lᵀ (px)</th></tr>" + rows + "</table>")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _render(g, height, width, blend, backend, scale):
    from . import render

    return render(g, height, width, blend=blend, backend=backend, scale=scale)


# ---------------------------------------------------------------------- fit monitor
class FitMonitor:
    """Watch :func:`gilab.fit` work: the target, the current render and the PSNR curve, live, with a Stop button.

    How it stays live in JupyterLab 4: :meth:`start` runs the fit in a **background thread**, so the cell
    returns at once and the kernel stays free to handle widget events. ``gilab.fit``'s ``callback`` (called
    every ``every`` iterations, in that thread) pushes the render, the curve and the progress to the widgets
    (at most every ``min_interval`` seconds; ipykernel sends widget updates from any thread), and returns True
    once the Stop button was pressed, which ends the fit cleanly (the Gaussians so far are the result).
    A button click is a message the kernel's main thread handles, which it can because it is not blocked
    by the fit. Calling :meth:`wait` blocks the kernel until the fit has ended (the Stop button cannot be
    handled meanwhile, so call it in a later cell). The kernel's interrupt button does not reach the fit's
    thread: use Stop (or :meth:`stop`).

    Args:
        image: the target, (3, H, W) in [0, 1] (or anything :func:`gilab.fit` accepts).
        every: the callback's period in iterations (``callback_every``).
        min_interval: the least time between two screen updates, seconds.
        max_side: pictures larger than this are shrunk for display (the fit itself is not).
        **fit_kwargs: passed to :func:`gilab.fit` (``n``, ``iters``, ``seconds``, ``param``, ``lr``, ``init``...).
    """

    def __init__(self, image, *, every: int = 10, min_interval: float = 0.3, max_side: int = 256, **fit_kwargs):
        w = _widgets()
        if "callback" in fit_kwargs:
            raise ValueError("FitMonitor sets fit's callback itself")
        if not isinstance(image, Tensor):
            from .io import to_tensor_image

            image = to_tensor_image(image)
        self.target = image
        self.every, self.min_interval, self.max_side = int(every), float(min_interval), max_side
        self.fit_kwargs = {"progress": False, **fit_kwargs}
        self.iterations: list[int] = []  # the curve: (iteration, seconds, PSNR) every `every` iterations
        self.seconds: list[float] = []
        self.psnr: list[float] = []
        self.result = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_update = -math.inf
        self.updates = 0

        layout = w.Layout(margin="0 8px 0 0")
        # small images are shown enlarged by a whole factor (at least 192 px wide), large ones at max_side
        height, width = image.shape[-2:]
        shown = min(width, round(width * max_side / max(height, width)))
        shown *= max(1, 192 // shown)
        self.target_view = w.Image(value=image_to_bytes(image, "jpeg", max_side), format="jpeg", width=str(shown),
                                   layout=layout)
        self.render_view = w.Image(format="jpeg", width=str(shown), layout=layout)
        self.curve_view = w.Image(format="png")
        self.progress = w.FloatProgress(value=0, min=0, max=1, description="fit", bar_style="info")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="warning", disabled=True,
                                    tooltip="end the fit after the current iteration")
        self.status = w.Label("not started: call .start()")
        for widget, name in ((self.target_view, "target"), (self.render_view, "render"), (self.curve_view, "curve"),
                             (self.progress, "progress"), (self.stop_button, "stop"), (self.status, "status")):
            widget.add_class(f"gilab-fit-{name}")
        self.stop_button.on_click(lambda _: self.stop())
        self._figure = None
        titles = [w.HTML("<b>target</b>"), w.HTML("<b>render</b>"), w.HTML("<b>PSNR (dB) against iteration</b>")]
        views = [w.VBox([t, v]) for t, v in zip(titles, (self.target_view, self.render_view, self.curve_view))]
        self.widget = w.VBox([w.HBox(views), w.HBox([self.progress, self.stop_button, self.status])])
        self.widget.add_class("gilab-fit-monitor")

    # -------------------------------------------------------------- control
    def start(self) -> FitMonitor:
        """Start the fit in a background thread and return at once (returns the monitor, to display it)."""
        if self.running:
            raise RuntimeError("this monitor's fit is already running")
        self._stop.clear()
        self.result, self.error = None, None
        self.iterations.clear(), self.seconds.clear(), self.psnr.clear()
        self.stop_button.disabled = False
        self.progress.bar_style, self.progress.value = "info", 0
        self.status.value = "starting..."
        self._thread = threading.Thread(target=self._run, name="gilab-fit-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Ask the fit to stop at its next callback (the Stop button calls this)."""
        self._stop.set()
        self.stop_button.disabled = True
        if self.running:
            self.status.value = "stopping..."

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        """Whether the Stop button (or :meth:`stop`) ended the fit."""
        return self._stop.is_set()

    def wait(self, timeout: float | None = None):
        """Block until the fit has ended; return its :class:`~gilab.FitResult` (re-raises the fit's error)."""
        if self._thread is None:
            raise RuntimeError("the fit was not started: call .start() first")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the fit is still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    # -------------------------------------------------------------- the fit thread
    def _run(self):
        from .fitting import fit

        try:
            result = fit(self.target, callback=self._callback, callback_every=self.every, **self.fit_kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported in the widget and re-raised by wait()
            self.error = exc
            self.status.value = f"failed: {type(exc).__name__}: {exc}"
            self.progress.bar_style = "danger"
            self.stop_button.disabled = True
            return
        self.result = result
        h = result.history
        self.iterations[:], self.seconds[:], self.psnr[:] = list(h.iteration), list(h.seconds), list(h.psnr)
        self._show(result.image)
        self.progress.value, self.progress.bar_style = 1, "success"
        self.stop_button.disabled = True
        how = "stopped" if self.stopped else "done"
        self.status.value = f"{how}: {result.summary()}"

    def _callback(self, state) -> bool:
        self.iterations.append(state.iteration)
        self.seconds.append(state.seconds)
        self.psnr.append(state.psnr)
        now = time.perf_counter()
        if now - self._last_update >= self.min_interval:
            self._last_update = now
            self._show(state.image)
            fractions = [0.0]
            if state.total_iters:
                fractions.append(state.iteration / state.total_iters)
            if state.total_seconds:
                fractions.append(state.seconds / state.total_seconds)
            self.progress.value = min(1.0, max(fractions))
            self.status.value = (f"iteration {state.iteration}, {state.seconds:.1f} s, PSNR {state.psnr:.2f} dB")
        return self._stop.is_set()

    def _show(self, image: Tensor):
        self.render_view.value = image_to_bytes(image, "jpeg", self.max_side)
        self.curve_view.value = self._curve_png()
        self.updates += 1

    def _curve_png(self) -> bytes:
        # An object-oriented Figure (no pyplot): safe off the main thread, and nothing is shown inline.
        from matplotlib.figure import Figure

        if self._figure is None:
            fig = Figure(figsize=(3.6, 2.6), dpi=80, layout="constrained")
            ax = fig.subplots()
            (line,) = ax.plot([], [], color="C0")
            ax.set_xlabel("iteration")
            ax.set_ylabel("PSNR (dB)")
            ax.grid(True, alpha=0.3)
            self._figure = (fig, ax, line)
        fig, ax, line = self._figure
        line.set_data(self.iterations, self.psnr)
        ax.relim()
        ax.autoscale_view()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
