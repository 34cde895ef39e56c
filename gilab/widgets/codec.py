"""The codec explorer: one set of fitted Gaussians, quantised, entropy-coded and decoded under sliders (notebook 07).

    explorer = CodecExplorer(image, result.gaussians)   # a float fit, made once (or the FitResult itself)
    explorer                                            # (display it)
    explorer.position_bits.value = 8                    # what a slider does: quantise, encode, decode again
    explorer.data, explorer.bpp, explorer.psnr          # the .gic bytes, their rate, what they decode to

Nothing is trained here: each change runs :func:`gilab.codec.quantise` (the quantisers alone, no
quantisation-aware fine-tuning), :func:`gilab.codec.encode` and :func:`gilab.codec.decompress` on the same float
Gaussians, so an update takes milliseconds on a small image. The file behind the picture is a real one:
``decompress(explorer.data)`` is ``explorer.decoded``, and ``len(explorer.data)`` is the size the status line
reports.
"""

from __future__ import annotations

import html
import time

import numpy as np
import torch
from torch import Tensor

from ..codec import CodecSettings, decompress, encode, quantise
from ..gaussians import Gaussians2D
from .common import _render, _widgets, image_to_bytes, image_to_uint8

#: What the picture can show: the decoded file, the float Gaussians before quantisation, the target, or the
#: decoded image's error |decoded - target| (magma colour map, bright: worse).
VIEWS = ("decoded", "float", "target", "error")
#: Codebook sizes the slider offers (codewords per stage).
CODEBOOK_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: The bitstream's components, in the order the status line lists them.
PARTS = ("positions", "covariances", "colours", "header")


class CodecExplorer:
    """Trade bits for quality live: quantise one fitted set of Gaussians at the chosen bit depths, write the
    ``.gic`` file, decode it and show the picture, its size and its PSNR.

    Controls: ``position_bits`` (``2**bits`` grid cells per axis), ``cholesky_bits`` (``2**bits`` levels per
    Cholesky factor), ``codebook_size`` (codewords per colour stage) and ``stages`` (residual VQ stages of the
    colours); ``show`` picks the picture (see :data:`VIEWS`). ``status`` reads the file's size in bytes and bits
    per pixel, the decoded PSNR beside the float fit's, and the bits per Gaussian of each part of the file.
    Sliders act when released; a change of ``show`` redraws without encoding again.

    Args:
        image: the target, (3, H, W) in [0, 1].
        gaussians: the float Gaussians fitted to it (a :class:`~gilab.Gaussians2D`, or a
            :class:`~gilab.FitResult`, whose ``gaussians`` are taken).
        position_bits, cholesky_bits, codebook_size, stages: the starting settings (gilab's defaults:
            12, 6, 64, 2; GaussianImage's recipe is 16, 6, 8, 2).
        show: the starting view, one of :data:`VIEWS`.
        zoom: display magnification (default: what makes the longer side ``max_display`` pixels); the picture
            is shown at that size beside the controls, so that the widget fits a 1366 x 768 screen.
        format, quality: "jpeg" at this quality (a saved notebook keeps the last picture) or "png" (exact pixels).
        seed: the k-means seed of the colour codebooks.
        backend: the render backend (decoding is rendering).

    Attributes after each update: ``settings`` (:class:`~gilab.codec.CodecSettings`), ``quantised``
    (:class:`~gilab.codec.QuantisedGaussians`), ``data`` (the file's bytes), ``bits`` (its size by part, bits;
    they add up to ``8 * len(data)``), ``bpp``, ``decoded`` (3, H, W), ``psnr`` (dB), ``float_psnr`` (dB, the
    Gaussians before quantisation), ``encodes`` (files written), ``renders`` (pictures sent), ``last_ms`` (the
    update's time), ``error`` (the last message, or None).
    """

    def __init__(self, image: Tensor, gaussians, position_bits: int = 12, cholesky_bits: int = 6,
                 codebook_size: int = 64, stages: int = 2, show: str = "decoded", zoom: float | None = None,
                 max_display: int = 420, format: str = "jpeg", quality: int = 85, seed: int = 0,
                 backend: str = "auto"):
        w = _widgets()
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be a (3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
        if not isinstance(gaussians, Gaussians2D) and isinstance(getattr(gaussians, "gaussians", None), Gaussians2D):
            gaussians = gaussians.gaussians  # a FitResult
        if not isinstance(gaussians, Gaussians2D):
            raise TypeError(f"gaussians must be a Gaussians2D or a FitResult, got {type(gaussians).__name__}")
        if show not in VIEWS:
            raise ValueError(f"show must be one of {', '.join(VIEWS)}, got {show!r}")
        self.target = image.detach().float().cpu()
        self.height, self.width = self.target.shape[-2:]
        self.gaussians = gaussians.detach().to("cpu", torch.float32)
        self.seed, self.backend, self.format, self.quality = int(seed), backend, format, int(quality)
        self.zoom = float(zoom) if zoom is not None else max_display / max(self.height, self.width)
        self.display_size = (max(1, round(self.width * self.zoom)), max(1, round(self.height * self.zoom)))

        from .. import metrics

        with torch.no_grad():
            self.float_image = _render(self.gaussians, self.height, self.width, "sum", backend, 1.0).clamp(0, 1)
        self.float_psnr = float(metrics.psnr(self.float_image, self.target))
        self.settings: CodecSettings | None = None
        self.quantised = self.data = self.bits = self.decoded = None
        self.psnr = float("nan")
        self.encodes = self.renders = 0
        self.last_ms, self.error, self._quiet = 0.0, None, False

        style = {"description_width": "100px"}
        wide = w.Layout(width="340px")
        slider = {"continuous_update": False, "style": style, "layout": wide}
        self.position_bits = w.IntSlider(int(position_bits), min=1, max=16, description="position bits", **slider)
        self.cholesky_bits = w.IntSlider(int(cholesky_bits), min=1, max=12, description="Cholesky bits", **slider)
        sizes = sorted(set(CODEBOOK_SIZES) | {int(codebook_size)})
        self.codebook_size = w.SelectionSlider(options=sizes, value=int(codebook_size), description="codewords",
                                               **slider)
        self.stages = w.IntSlider(int(stages), min=1, max=4, description="colour stages", **slider)
        self.show = w.ToggleButtons(options=list(VIEWS), value=show, style={"button_width": "70px"},
                                    tooltips=["the decoded .gic file", "the float Gaussians, before quantisation",
                                              "the target image", "|decoded - target| (bright: worse)"])
        dw, dh = self.display_size  # set in pixels: a flex box would otherwise stretch it to the notebook's width
        self.image = w.Image(format=format, width=str(dw), height=str(dh),
                             layout=w.Layout(width=f"{dw}px", height=f"{dh}px", object_fit="contain",
                                             flex="0 0 auto"))
        self.status = w.HTML(layout=w.Layout(width=f"{max(dw, 320)}px"))  # wraps under the picture

        parts = {"position-bits": self.position_bits, "cholesky-bits": self.cholesky_bits,
                 "codebook-size": self.codebook_size, "stages": self.stages, "show": self.show,
                 "image": self.image, "status": self.status}
        for name, control in parts.items():
            control.add_class(f"gilab-codec-{name}")
            if name not in ("image", "status"):
                control.observe(self._on_change, names="value")
        show_row = w.HBox([w.Label("show", layout=w.Layout(width="100px", flex="0 0 auto")), self.show])
        note = w.HTML("<small>GaussianImage's recipe: 16 / 6 / 8 codewords / 2 stages; gilab's default: "
                      "12 / 6 / 64 / 2. Nothing is re-trained here: quantisation-aware fine-tuning "
                      "(<code>gilab.codec.compress</code>) does better at the same settings.</small>",
                      layout=w.Layout(width="340px"))
        controls = w.VBox([self.position_bits, self.cholesky_bits, self.codebook_size, self.stages, show_row, note],
                          layout=w.Layout(margin="0 0 0 12px"))
        # the controls beside the picture, the status line right under it: one screen, nothing to scroll
        self.widget = w.HBox([w.VBox([self.image, self.status], layout=w.Layout(flex="0 0 auto")), controls],
                             layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.widget.add_class("gilab-codec-explorer")
        self.update()

    # -------------------------------------------------------------- model
    def current_settings(self) -> CodecSettings:
        """The settings the controls show."""
        return CodecSettings(int(self.position_bits.value), int(self.cholesky_bits.value), int(self.stages.value),
                             int(self.codebook_size.value))

    @property
    def bpp(self) -> float:
        """Bits per pixel of the current file: 8 len(data) / (H W)."""
        return 8 * len(self.data) / (self.height * self.width) if self.data is not None else float("nan")

    @property
    def size_bytes(self) -> int:
        """The current file's size, bytes (what the status line reports)."""
        return len(self.data) if self.data is not None else 0

    def encode(self) -> None:
        """Quantise, encode and decode again if a setting moved; the view alone changes nothing here."""
        settings = self.current_settings()
        if settings == self.settings:
            return
        from .. import metrics

        self.error = None
        try:
            quantised = quantise(self.gaussians, settings, size=(self.height, self.width), seed=self.seed)
            data, bits = encode(quantised)
            decoded = decompress(data, backend=self.backend)
        except Exception as exc:  # noqa: BLE001 - a widget reports, it does not raise into the kernel's event loop
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.settings, self.quantised, self.data, self.bits, self.decoded = settings, quantised, data, bits, decoded
        self.psnr = float(metrics.psnr(decoded, self.target))
        self.encodes += 1

    # -------------------------------------------------------------- view
    def _on_change(self, change):
        if not self._quiet:
            self.update()

    def update(self):
        """Encode (if a setting moved), draw the chosen view, send the picture and the status line."""
        start = time.perf_counter()
        self.encode()
        picture = self.draw()
        self.last_ms = 1000 * (time.perf_counter() - start)
        self.image.value = image_to_bytes(picture, self.format, quality=self.quality)
        self.renders += 1
        self.status.value = self._status()  # last: a watcher knows the picture above is the new one

    def draw(self):
        """The current view at the display size (a PIL image): pixels are enlarged as blocks, not smoothed."""
        from PIL import Image

        view = self.show.value
        if view == "error" and self.decoded is not None:
            from matplotlib import colormaps

            error = (self.decoded - self.target).abs().mean(0)
            scale = max(0.02, float(error.flatten().quantile(0.995)))
            base = (colormaps["magma"]((error / scale).clamp(0, 1).numpy())[..., :3] * 255).round().astype(np.uint8)
        else:
            source = {"decoded": self.decoded, "float": self.float_image}.get(view, self.target)
            base = image_to_uint8(source if source is not None else self.target)
        resample = Image.NEAREST if self.zoom >= 1 else Image.LANCZOS
        return Image.fromarray(base, "RGB").resize(self.display_size, resample)

    def _status(self) -> str:
        if self.data is None:
            return f"no file: {html.escape(str(self.error))}"
        n = len(self.quantised)
        s = self.settings
        per = ", ".join(f"{part} {self.bits[part] / max(n, 1):.1f}" for part in PARTS)
        text = (f"<b>{len(self.data):,} bytes = {self.bpp:.3f} bpp</b>; PSNR <b>{self.psnr:.2f} dB</b> "
                f"(float {self.float_psnr:.2f} dB, {self.psnr - self.float_psnr:+.2f}); {n:,} Gaussians at "
                f"{s.position_bits} / {s.cholesky_bits} bits, colours {s.stages} x {s.codebook_size}<br>"
                f"bits per Gaussian: {per}; {self.last_ms:.0f} ms (update {self.renders})")
        if self.error is not None:
            text = f"{text}<br><span style='color:#b35900'>⚠ {html.escape(self.error)}</span>"
        return text

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
