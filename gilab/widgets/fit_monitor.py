"""The live fit monitor: gilab.fit in a background thread, its render and PSNR curve live, a Stop button (notebook 02)."""

from __future__ import annotations

import html
import io
import math
import threading
import time

from torch import Tensor

from .common import BackgroundWork, _widgets, image_to_bytes


class FitMonitor(BackgroundWork):
    """Watch :func:`gilab.fit` work: the target, the current render and the PSNR curve, live, with a Stop button.

    How it stays live in JupyterLab 4: :meth:`start` runs the fit in a **background thread**, so the cell
    returns at once and the kernel stays free to handle widget events. ``gilab.fit``'s ``callback`` (called
    every ``every`` iterations, in that thread) pushes the render, the curve and the progress to the widgets
    (at most every ``min_interval`` seconds; ipykernel sends widget updates from any thread), and returns True
    once the Stop button was pressed, which ends the fit cleanly (the Gaussians so far are the result).
    A button click is a message the kernel's main thread handles, which it can because it is not blocked
    by the fit. To get the result in a later cell, ``result = await monitor``: the cell waits for the end but
    leaves the kernel free, so Stop still works under *Run All* (see :class:`BackgroundWork`). ``wait()``
    blocks the kernel instead (for scripts). A stopped fit leaves its bar where it stopped, in orange.

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
            from ..io import to_tensor_image

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
        # HTML, not Label: the final summary is long and wraps instead of running off the widget's edge
        self.status = w.HTML("not started: call .start()", layout=w.Layout(max_width="560px"))
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

    def wait(self, timeout: float | None = None):
        """Block until the fit has ended; return its :class:`~gilab.FitResult` (re-raises the fit's error).

        It blocks the kernel, so the Stop button cannot be handled meanwhile: in a notebook use
        ``await monitor`` instead."""
        self._join(timeout, "the fit")
        return self.result

    def _outcome(self):
        return self.result

    # -------------------------------------------------------------- the fit thread
    def _run(self):
        from ..fitting import fit

        try:
            result = fit(self.target, callback=self._callback, callback_every=self.every, **self.fit_kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported in the widget and re-raised by wait()
            self.error = exc
            self.status.value = html.escape(f"failed: {type(exc).__name__}: {exc}")
            self.progress.bar_style = "danger"
            self.stop_button.disabled = True
            return
        self.result = result
        h = result.history
        self.iterations[:], self.seconds[:], self.psnr[:] = list(h.iteration), list(h.seconds), list(h.psnr)
        self._show(result.image)
        if self.stopped:  # the bar stays where the fit stopped, in orange: not a finished run
            self.progress.value = max(self.progress.value, self._fraction(result.iterations, result.seconds))
            self.progress.bar_style = "warning"
        else:
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
            self.progress.value = self._fraction(state.iteration, state.seconds, state.total_iters,
                                                 state.total_seconds)
            self.status.value = (f"iteration {state.iteration}, {state.seconds:.1f} s, PSNR {state.psnr:.2f} dB")
        return self._stop.is_set()

    def _fraction(self, iteration: int, seconds: float, total_iters=None, total_seconds=None) -> float:
        """How far the fit is, in [0, 1]: the larger of the iterations' and the seconds' share of the budget."""
        total_iters = total_iters if total_iters is not None else self.fit_kwargs.get("iters")
        total_seconds = total_seconds if total_seconds is not None else self.fit_kwargs.get("seconds")
        fractions = [0.0]
        if total_iters:
            fractions.append(iteration / total_iters)
        if total_seconds:
            fractions.append(seconds / total_seconds)
        return min(1.0, max(fractions))

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
