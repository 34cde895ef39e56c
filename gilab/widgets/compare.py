"""Net, quad-tree and random starts fine-tuned live under one wall-clock budget (notebook 05).

    from gilab.widgets import StartComparison
    comparison = StartComparison(budget=2.0)   # Grace Hopper (and the Kodak images, when GILAB_DATA has them)
    comparison.start()                         # or press Run; the cell returns at once
    comparison                                 # (display it): three renders and the PSNR curves, live
    runs = await comparison                    # (a later cell) {start: run record as a dict}, once they have ended

The protocol is the time-to-quality study's (:mod:`gilab.study`): the generator ("net") decides N for the
picture, the quad-tree and random starts are made at that same N, each start is fine-tuned by
:func:`gilab.fit` with the study's settings (:class:`~gilab.study.StudyConfig`: Adan, lr 1e-3, Cholesky),
and the clock includes the time spent making the start. The quad-tree and random starts run ``slow_factor``
(default 4) times the budget, so that the speed-up line (:func:`gilab.study.speedups`: the time random needs to
reach the PSNR that net has at budget b, divided by b) is a measured number wherever they catch up within their
run, and a lower bound "> x" only where they do not.

Only difference from :func:`gilab.study.run_one`: the runs report to the screen while they fit. The fit's
callback just records the curve; a painter thread sends the latest render a few times per second and redraws the
curves about once a second. It shares the CPU with the fit (a few per cent, the same for every start); the
notebook's cells use ``run_one`` for their numbers.
"""

from __future__ import annotations

import io
import math
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ImageError
from ..plots.study import COLORS
from ..study import INITS, RunRecord, Snapshot, SnapshotRule, StudyConfig, make_start, psnr_at, speedups
from ..study.protocol import SLOW_STARTS
from .common import BackgroundWork, _widgets, image_to_bytes

LABELS = {"net": "net (Instant-GI)", "quadtree": "quad-tree", "random": "random (GaussianImage)"}
DOWNSCALES = (("full size", 1), ("1/2", 2), ("1/4", 4), ("1/8", 8))
DEFAULT_NAME = "Grace Hopper"
#: The budgets the slider offers, seconds: round numbers only (a log slider gave 1.99526 for 2).
BUDGETS = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
           60.0, 90.0, 120.0)

_warm = threading.Lock()
_warmed = False


def decode_upload(name: str, data: bytes) -> Tensor:
    """An uploaded file's bytes as a (3, H, W) float32 tensor in [0, 1], decoded by :func:`gilab.io.load_image`
    (so greyscale, palettes, transparency, 16-bit and the EXIF orientation are handled as for files on disk).

    Raises:
        ImageError: one line, "<name>: <reason>", for empty, truncated or non-image bytes and too-large images.
    """
    from ..io import load_image

    name = Path(str(name or "")).name
    if name in ("", ".", ".."):
        name = "upload"
    with tempfile.TemporaryDirectory(prefix="gilab-upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(bytes(data))
        try:
            return load_image(path)
        except ImageError as exc:
            raise ImageError(str(exc).replace(str(path), name)) from None


def resize(image: Tensor, downscale: int = 1, max_side: int | None = None) -> Tensor:
    """(3, H, W) -> (3, H / downscale, W / downscale), area-averaged, then shrunk further (aspect kept) if the
    longer side would exceed ``max_side`` pixels. Never enlarges."""
    import torch.nn.functional as F

    height, width = image.shape[-2:]
    f = 1.0 / max(1, int(downscale))
    if max_side is not None and max(height, width) * f > max_side:
        f = max_side / max(height, width)
    if f >= 1.0:
        return image
    size = (max(1, round(height * f)), max(1, round(width * f)))
    return F.interpolate(image[None], size=size, mode="area")[0]


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _warm_up_once():
    """The study's warm-up (the rasterizer's compiled kernels), once per process: no start pays for it."""
    global _warmed
    with _warm:
        if not _warmed:
            from ..study import warm_up

            warm_up()
            _warmed = True


class StartComparison(BackgroundWork):
    """Three starts for one picture, fine-tuned one after the other under the same budget, live.

    Controls: the picture (a dropdown: the image you pass, Grace Hopper, the Kodak images when
    :func:`gilab.datasets.kodak` finds them, and files you upload with the upload button, decoded by
    :mod:`gilab.io`; a bad file gets a one-line message), its size (a downscale factor), the budget in seconds
    (init included) and which starts to run. **Run** starts the runs in a background thread (the notebook stays
    usable), **Stop** ends them after the current iteration. The target, each start's render (with N and its
    PSNR), the PSNR-against-time curves (log time axis) and a progress bar update while the runs go; at the end
    a line gives the speed-up of net over random (and over the quad-tree).

    Args:
        image: a picture to offer first and pick (a (3, H, W) tensor in [0, 1], a path, a PIL image or an array).
        name: its label in the dropdown.
        budget: seconds per start, init included.
        starts: the starts ticked at first, from ``("net", "quadtree", "random")``.
        downscale: the size factor picked at first (1, 2, 4 or 8).
        max_side: pictures are also shrunk until their longer side is at most this (uploads of large photos).
        fractions: the speed-up is given at these fractions of the budget.
        config: the study's settings (the budgets in it are replaced by ``fractions`` x budget).
        generator: a :class:`gilab.generator.Generator`; default the shipped one, loaded on the first run.
        min_interval: the least time between two screen updates of a render, seconds.
        curve_interval: the least time between two redraws of the curves during a run, seconds.
        display_side: pictures are shown at about this width (small ones enlarged by a whole factor).

    Attributes for code and tests: ``runs`` ({start: :class:`~gilab.study.RunRecord` as a dict, the
    format :func:`gilab.study.psnr_at`, ``time_to_reach`` and ``speedups`` read}), ``gaussians``
    ({start: the fitted :class:`Gaussians2D`}), ``n`` (the generator's N), ``budget``, ``image`` (the target of
    the last run), ``runs_done``, ``updates`` (screen updates sent), ``summary`` (the speed-up line).
    """

    def __init__(self, image=None, *, name: str = "your image", budget: float = 2.0, starts=INITS,
                 downscale: int = 2, max_side: int = 1024, fractions=(0.1, 0.25, 1.0),
                 config: StudyConfig | None = None, generator=None, min_interval: float = 0.3,
                 curve_interval: float = 1.0, display_side: int = 192):
        w = _widgets()
        unknown = set(starts) - set(INITS)
        if unknown:
            raise ValueError(f"unknown start(s) {sorted(unknown)}; choose from {', '.join(INITS)}")
        self.config = config or StudyConfig(slow_factor=4.0)
        self.fractions = tuple(sorted(float(f) for f in fractions))
        self.max_side, self.display_side = max_side, int(display_side)
        self.min_interval, self.curve_interval = float(min_interval), float(curve_interval)
        self._generator = generator
        self.runs: dict[str, dict] = {}
        self.gaussians: dict = {}
        self.n: int | None = None
        self.budget: float | None = None
        self.image: Tensor | None = None
        self.summary = ""
        self.error: BaseException | None = None
        self.runs_done = 0
        self.updates = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: tuple[str, list, list] | None = None  # (start, seconds, PSNR) of the run in progress
        self._latest: tuple | None = None  # the fit's latest state, for the painter thread
        self._draw_lock = threading.Lock()  # renders and captions: the painter never overwrites a final frame
        self._curve_lock = threading.Lock()
        self._figure = None

        # the pictures on offer: label -> a loaded (3, H, W) tensor, or a path loaded when first picked
        self._sources: dict[str, object] = {}
        if image is not None:
            from ..io import to_tensor_image

            self._sources[name] = image if isinstance(image, Tensor) else to_tensor_image(image)
        self._sources.setdefault(DEFAULT_NAME, None)  # gilab.io.default_image()
        for path in _kodak_paths():
            self._sources.setdefault(path.stem, path)  # the image passed in keeps its label

        self.image_choice = w.Dropdown(options=list(self._sources), value=next(iter(self._sources)),
                                       description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="your picture",
                                   tooltip="upload an image file (PNG, JPEG, ...); it is added to the list")
        factors = [f for _, f in DOWNSCALES]
        if int(downscale) not in factors:
            raise ValueError(f"downscale must be one of {factors}, got {downscale!r}")
        self.downscale = w.Dropdown(options=list(DOWNSCALES), value=int(downscale), description="size")
        # A slider over round numbers (the budget passed in is added if it is not one of them): the value is
        # exactly what the readout says. Its own width, so the row's flex box cannot squeeze it.
        budgets = sorted({*BUDGETS, float(budget)})
        self.budget_slider = w.SelectionSlider(options=[(f"{b:g} s", b) for b in budgets], value=float(budget),
                                               description="budget", style={"description_width": "50px"},
                                               layout=w.Layout(width="320px", min_width="260px", flex="0 0 auto"),
                                               continuous_update=False)
        self.start_boxes = {k: w.Checkbox(value=k in starts, description=LABELS[k], indent=False)
                            for k in INITS}
        self.run_button = w.Button(description="Run", icon="play", button_style="primary",
                                   tooltip="fine-tune the ticked starts one after the other, same budget each")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="warning", disabled=True,
                                    tooltip="end the runs after the current iteration")
        self.message = w.Label("")
        self.progress = w.FloatProgress(value=0, min=0, max=1, description="runs", bar_style="info")
        self.status = w.Label("press Run (or call .start())")
        self.result_line = w.HTML("")
        self.target_view = w.Image(format="jpeg")
        self.target_caption = w.HTML("<b>target</b>")
        self.render_views = {k: w.Image(format="jpeg") for k in INITS}  # a grey placeholder until a start runs
        self.captions = {k: w.HTML(f"<b>{LABELS[k]}</b><br>not run") for k in INITS}
        self.curve_view = w.Image(format="png")

        named = [(self.image_choice, "image"), (self.upload, "upload"), (self.downscale, "size"),
                 (self.budget_slider, "budget"), (self.run_button, "run"), (self.stop_button, "stop"),
                 (self.message, "message"), (self.progress, "progress"), (self.status, "status"),
                 (self.result_line, "result"), (self.target_view, "target"), (self.curve_view, "curve")]
        for k in INITS:
            named += [(self.start_boxes[k], f"start-{k}"), (self.render_views[k], f"render-{k}"),
                      (self.captions[k], f"caption-{k}")]
        for widget, part in named:
            widget.add_class(f"gilab-cmp-{part}")

        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.upload.observe(self._on_upload, names="value")
        self.image_choice.observe(self._on_picture, names="value")
        self.downscale.observe(self._on_picture, names="value")

        pad = w.Layout(margin="0 8px 0 0")
        pictures = [w.VBox([self.target_caption, self.target_view], layout=pad)]
        pictures += [w.VBox([self.captions[k], self.render_views[k]], layout=pad) for k in INITS]
        controls = w.VBox([
            w.HBox([self.image_choice, self.upload, self.downscale]),
            w.HBox([self.budget_slider, *self.start_boxes.values(), self.run_button, self.stop_button]),
            self.message])
        side = w.VBox([w.HBox([self.progress, self.status]), self.result_line])
        self.widget = w.VBox([controls, w.HBox(pictures), w.HBox([self.curve_view, side])])
        self.widget.add_class("gilab-start-comparison")
        self._on_picture(None)
        self._draw_curves()  # empty axes, never an empty picture (a broken-image icon in the browser)

    # -------------------------------------------------------------- the picture
    def current_image(self) -> Tensor:
        """The target the next run uses: the picked picture at the picked size, (3, H, W) in [0, 1]."""
        label = self.image_choice.value
        source = self._sources[label]
        if not isinstance(source, Tensor):
            from ..io import default_image, load_image

            source = default_image() if source is None else load_image(source)
            self._sources[label] = source
        return resize(source, self.downscale.value, self.max_side)

    def _shown_width(self, image: Tensor) -> str:
        height, width = image.shape[-2:]
        shown = min(width, round(width * self.display_side / max(height, width)))
        return str(shown * max(1, self.display_side // max(1, shown)))

    def _on_picture(self, _change):
        if self.running:
            return
        try:
            image = self.current_image()
        except Exception as exc:  # noqa: BLE001 - a bad file on disk: one line in the widget, never a traceback
            self.message.value = f"⚠ {_one_line(exc)}"
            return
        width = self._shown_width(image)
        self.target_view.value = image_to_bytes(image, "jpeg", self.display_side)
        self.target_caption.value = f"<b>target</b><br>{image.shape[2]}x{image.shape[1]} px"
        for view in (self.target_view, *self.render_views.values()):
            view.width = width
        self._placeholder = self._blank(image)
        for kind, view in self.render_views.items():
            if kind not in self.runs:  # never an empty picture (the browser shows a broken-image icon)
                view.value = self._placeholder

    def _blank(self, image: Tensor) -> bytes:
        """A light grey picture of the target's shape: where a start has not run (yet)."""
        return image_to_bytes(torch.full_like(image[:, ::4, ::4] if min(image.shape[-2:]) >= 64 else image, 0.92),
                              "jpeg", self.display_side)

    def _on_upload(self, change):
        files = change["new"]
        if not files:
            return
        upload = files[-1]
        name = Path(str(upload.get("name") or "")).name or "upload"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image = decode_upload(name, bytes(upload["content"]))
        except ImageError as exc:
            self.message.value = f"⚠ {_one_line(exc)}"
            return
        except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the reader gets one line
            self.message.value = f"⚠ {_one_line(f'{name}: {type(exc).__name__}: {exc}')}"
            return
        label = f"upload: {name}"
        self._sources[label] = image
        self.image_choice.options = [o for o in self.image_choice.options if o != label] + [label]
        self.image_choice.value = label
        self._on_picture(None)  # the same label uploaded again: no change event, show it anyway
        note = f" ({_one_line(caught[0].message)})" if caught else ""
        self.message.value = f"{name}: {image.shape[2]}x{image.shape[1]} px{note}"

    # -------------------------------------------------------------- control
    def start(self) -> StartComparison:
        """Start the runs in a background thread and return at once (returns the widget, to display it).

        A problem with the choices (no start ticked, an unreadable picture) is shown as one line instead."""
        if self.running:
            raise RuntimeError("the comparison is already running")
        kinds = [k for k in INITS if self.start_boxes[k].value]
        if not kinds:
            self.message.value = "⚠ tick at least one start"
            return self
        try:
            image = self.current_image()
        except Exception as exc:  # noqa: BLE001
            self.message.value = f"⚠ {_one_line(exc)}"
            return self
        self.message.value = ""
        self._stop.clear()
        self.runs, self.gaussians, self.summary, self.error = {}, {}, "", None
        self.runs_done, self.n, self._live, self._latest = 0, None, None, None
        self.image, self.budget = image, float(self.budget_slider.value)
        self._placeholder = self._blank(image)
        for k in INITS:
            self.render_views[k].value = self._placeholder
            self.captions[k].value = f"<b>{LABELS[k]}</b><br>{'waiting' if k in kinds else 'not run'}"
        self.result_line.value = ""
        self.progress.value, self.progress.bar_style = 0, "info"
        self._set_running(True)
        self.status.value = "starting..."
        self._thread = threading.Thread(target=self._run, args=(image, kinds, self.budget),
                                        name="gilab-start-comparison", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> dict[str, dict]:
        """Block until the runs have ended; returns :attr:`runs` (re-raises a run's error). It blocks the
        kernel, so the Stop button cannot be handled meanwhile: in a notebook use ``await comparison``."""
        self._join(timeout, "the comparison")
        return self.runs

    def _outcome(self):
        return self.runs

    def _set_running(self, running: bool):
        for control in (self.image_choice, self.upload, self.downscale, self.budget_slider, self.run_button,
                        *self.start_boxes.values()):
            control.disabled = running
        self.stop_button.disabled = not running

    # -------------------------------------------------------------- the runs (background thread)
    def _run(self, image: Tensor, kinds: list[str], budget: float):
        done = threading.Event()
        painter = threading.Thread(target=self._paint_loop, args=(done,), name="gilab-start-comparison-paint",
                                   daemon=True)
        try:
            budgets = tuple(sorted({round(budget * f, 4) for f in self.fractions}))
            config = replace(self.config, budgets=budgets, inits=tuple(kinds))
            self.status.value = "loading the generator and warming up..."
            if self._generator is None:
                from ..generator import Generator

                self._generator = Generator.from_pretrained()
            _warm_up_once()
            # N is the generator's for this picture, whichever starts run; the call also loads what the
            # generator needs, so that the timed net start below does not pay for it.
            self.n = len(self._generator(image, kernel_size=config.kernel_size, density=config.density))
            self._draw_curves()  # matplotlib's first figure is slow: drawn here, before any clock runs
            painter.start()
            for index, kind in enumerate(kinds):
                if self._stop.is_set():
                    break
                self._run_one(image, kind, config, index, len(kinds))
            done.set()
            if painter.is_alive():
                painter.join()
            self._finish(kinds)
        except BaseException as exc:  # noqa: BLE001 - shown in the widget, re-raised by wait()
            self.error = exc
            self.message.value = f"⚠ failed: {_one_line(f'{type(exc).__name__}: {exc}')}"
            self.status.value = "failed"
            self.progress.bar_style = "danger"
        finally:
            done.set()
            self._live = self._latest = None
            self._set_running(False)

    def _run_one(self, image: Tensor, kind: str, config: StudyConfig, index: int, count: int):
        """One start, fitted as :func:`gilab.study.run_one` fits it. The fit's callback only records the
        curve and hands the latest render to the painter thread, so that drawing does not stall the fit."""
        from ..fitting import fit
        from ..metrics import psnr
        from ..render import render

        budget = config.budgets[-1] * (config.slow_factor if kind in SLOW_STARTS else 1.0)
        self.status.value = f"{LABELS[kind]}: making the start (run {index + 1} of {count})"
        gaussians, init_seconds = make_start(kind, image, self.n, config, self._generator)
        with torch.no_grad():  # shown before the clock of the fit starts: not part of the budget
            start_image = render(gaussians, *image.shape[-2:]).clamp(0, 1)
        with self._draw_lock:
            self._show_render(kind, start_image, len(gaussians), psnr(start_image, image).item(), init_seconds)
        seconds, values = [], []
        self._live = (kind, seconds, values)
        rule = SnapshotRule(config.budgets, gaussians, init_seconds)  # the study's rule: at or before each budget

        def callback(state) -> bool:
            rule(state)
            seconds.append(state.seconds)
            values.append(state.psnr)
            self._latest = (kind, state.image, len(gaussians), state.psnr, state.seconds, state.iteration,
                            budget, index, count)
            return self._stop.is_set()

        result = fit(image, init=gaussians, seconds=budget, param=config.param, seed=config.seed,
                     init_seconds=init_seconds, callback=callback, callback_every=1, progress=False)
        with self._draw_lock:  # the painter must not show a stale frame over the final one
            self._live = self._latest = None
        h = result.history
        if self._stop.is_set() and result.seconds < budget:  # ended early: no record of a partial run
            with self._draw_lock:
                self._show_render(kind, result.image, len(gaussians), h.psnr[-1], h.seconds[-1],
                                  note=f"stopped at {h.seconds[-1]:.2f} s of {budget:g}: no record")
            self._draw_curves(extra=(kind, h.seconds, h.psnr))
            return
        rule.finish(h.seconds[-1], result.iterations, result.gaussians)
        snapshots = [Snapshot(b, t, i, h.psnr[i]) for b, (t, i, _) in sorted(rule.kept.items())]
        record = RunRecord(kind, len(gaussians), init_seconds, h.psnr[0], snapshots, list(h.seconds),
                           list(h.psnr), list(h.iteration))
        self.runs[kind] = asdict(record)
        self.gaussians[kind] = result.gaussians
        self.runs_done += 1
        with self._draw_lock:
            self._show_render(kind, result.image, len(gaussians), psnr_at(self.runs[kind], budget), budget)
        self.progress.value = (index + 1) / count
        self._draw_curves()

    def _paint_loop(self, done: threading.Event):
        """The painter thread: every ``min_interval`` s, the latest render, progress and status; every
        ``curve_interval`` s, the curves."""
        shown, last_curve = None, time.perf_counter()
        while not done.wait(max(0.02, self.min_interval)):
            with self._draw_lock:
                latest = self._latest
                if latest is not None and latest is not shown:
                    shown = latest
                    kind, image, n, value, seconds, iteration, budget, index, count = latest
                    self._show_render(kind, image, n, value, seconds)
                    self.progress.value = (index + min(1.0, seconds / budget)) / count
                    self.status.value = (f"{LABELS[kind]}: {seconds:.1f} of {budget:g} s, iteration {iteration} "
                                         f"(run {index + 1} of {count})")
            if self._live is not None and time.perf_counter() - last_curve >= self.curve_interval:
                last_curve = time.perf_counter()
                self._draw_curves()

    def _finish(self, kinds: list[str]):
        for kind in kinds:  # the starts a Stop came before: say so instead of "waiting"
            if kind not in self.runs and "waiting" in self.captions[kind].value:
                self.captions[kind].value = f"<b>{LABELS[kind]}</b><br>not run (stopped before it)"
        self.summary = speedup_line(self.runs, self.budget)
        if self.stopped:
            done = f"stopped after {self.runs_done} of {len(kinds)} runs"
            self.summary = f"{done}; {self.summary}" if self.runs_done else done
            self.progress.bar_style = "warning"
        else:
            self.progress.value, self.progress.bar_style = 1, "success"
        self.result_line.value = f"<b>{self.summary}</b>"
        # the status goes last: it is what a reader (and the browser test) takes as "finished", and the
        # front end receives widget updates in the order they are set
        n = f"N = {self.n:,}, " if self.n is not None else ""
        self.status.value = f"{'stopped' if self.stopped else 'done'}: {n}{self.budget:g} s per start"

    # -------------------------------------------------------------- drawing
    def _show_render(self, kind: str, image: Tensor, n: int, value: float, seconds: float, note: str = ""):
        self.render_views[kind].value = image_to_bytes(image, "jpeg", self.display_side)
        self.captions[kind].value = (f"<b>{LABELS[kind]}</b><br>N {n:,}: {value:.2f} dB at {seconds:.2f} s"
                                     + (f"<br><i>{note}</i>" if note else ""))
        self.updates += 1

    def _draw_curves(self, extra=None):
        with self._curve_lock:  # the run thread and the painter both draw into one Figure
            self.curve_view.value = self._curve_png(extra)
            self.updates += 1

    def _curve_png(self, extra=None) -> bytes:
        # An object-oriented Figure (no pyplot): safe off the main thread, and nothing is shown inline.
        from matplotlib.figure import Figure

        from ..plots.fitting import log_axis

        if self._figure is None:
            self._figure = Figure(figsize=(4.4, 2.9), dpi=80, layout="constrained")
            self._figure.subplots()
        fig = self._figure
        ax = fig.axes[0]
        ax.clear()
        lines = [(k, r["seconds"], r["psnr"]) for k, r in self.runs.items()]
        lines += [line for line in (self._live, extra) if line is not None]
        shown = 0
        for kind, seconds, values in lines:
            pairs = [(t, p) for t, p in zip(list(seconds), list(values)) if t > 0 and math.isfinite(p)]
            if pairs:
                ax.plot(*zip(*pairs), color=COLORS[kind], label=LABELS[kind])
                shown += 1
        if shown:
            log_axis(ax)
            ax.legend(fontsize=8, loc="best")
            ax.tick_params(labelsize=8)
        if self.budget:
            ax.axvline(self.budget, color="gray", ls="--", lw=0.8)
            if shown:  # two decades: the starts' first iterations and the end of the budget
                ax.set_xlim(self.budget / 100, self.budget * max(1.0, self.config.slow_factor) * 1.2)
        ax.set_xlabel("time (s, init included)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(True, alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def speedup_line(runs: dict[str, dict], budget: float | None = None) -> str:
    """One line: :func:`gilab.study.speedups` of net over random (and over the quad-tree) at each snapshot
    budget b, e.g. "... b = 0.2 / 0.5 / 2 s: over random > 10.0x / > 4.0x / > 1.0x; over quad-tree 1.8x / ...".

    ``runs`` maps start -> run record dict (as :attr:`StartComparison.runs` holds them)."""
    if "net" not in runs or len(runs) < 2:
        return "the speed-up needs the net and at least one other start"
    if not runs["net"]["snapshots"]:  # its start alone took longer than every budget: nothing to compare
        within = f" within {budget:g} s" if budget else ""
        return (f"net: no PSNR{within} (its start took {runs['net']['init_seconds']:.2f} s): "
                "no speed-up to report; give it a longer budget")
    study = {"runs": list(runs.values())}
    budgets, parts = None, []
    for slow in ("random", "quadtree"):
        if slow not in runs:
            continue
        table = sorted(speedups([study], "net", slow).items())
        budgets = " / ".join(f"{b:g}" for b, _ in table)
        parts.append(f"over {LABELS[slow]} " + " / ".join(f"{'> ' if bound else ''}{value:.1f}x"
                                                       for _, [(value, bound)] in table))
    net_psnr = f"net: {psnr_at(runs['net'], budget):.2f} dB at {budget:g} s. " if budget else ""
    return (f"{net_psnr}Speed-up of net (time another start needs to reach net's PSNR at b, / b), b = {budgets} s: "
            + "; ".join(parts) + " (>: it never got there within its run)")


def _kodak_paths() -> list[Path]:
    """The Kodak images when they are on disk (``GILAB_DATA``) and verified; none otherwise, never a download."""
    from ..datasets import kodak
    from ..errors import DataError

    try:
        return kodak(download=False)
    except (DataError, OSError):
        return []
