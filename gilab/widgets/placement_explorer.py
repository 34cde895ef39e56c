"""The placement explorer: a PPM -> points -> triangles -> Gaussians, under sliders, drawn over the image (notebook 03).

    explorer = PlacementExplorer(image)                 # PPM: the quad-tree's pseudo-PPM of the image
    explorer = PlacementExplorer(image, ppm=my_ppm)     # any (H, W) map in [0, 1]
    explorer                                            # (display it)
    explorer.kernel_size.value = 4                      # what a slider does; explorer.gaussians is the new set

The widget only orchestrates and draws: every number comes from :func:`gilab.placement.place_steps` (what
:func:`gilab.placement.place` does, with the points and triangles it made kept for drawing) and :func:`gilab.render`.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch
from torch import Tensor

from ..placement import place_steps, saturating_density
from ..placement.place import COUNT_RTOL
from .common import _widgets, ellipse_outlines, image_to_bytes, image_to_uint8

#: Colours of the overlays (RGBA): points, triangle edges, Gaussian ellipses (1 standard deviation).
POINT_COLOR = (255, 40, 40, 255)
TRIANGLE_COLOR = (255, 255, 255, 150)
ELLIPSE_COLOR = (0, 230, 255, 200)
BOUNDARY_COLOR = (255, 200, 0, 255)


class PlacementExplorer:
    """Explore Instant GaussianImage's non-learned placement on one image: move a slider, see the points,
    triangles and Gaussians change, with N and the PSNR of their render.

    Controls: ``kernel_size`` (k: at most one point per k x k cell), ``density`` (a gain on the pooled PPM)
    or, with ``mode`` set to "target count", ``target_count`` (the gain is searched so that N lands within
    2 %; where no gain can, because adding one point adds two or three triangles at once, or the map cannot give
    that many, the nearest count it can give is shown and the status line says why); ``background`` ("image", "render" of the placed Gaussians, or the "PPM"); ``layers``, one checkbox
    each for "points" (dithered cell centres, boundary points in yellow), "triangles" (Delaunay) and
    "ellipses" (each Gaussian at 1 standard deviation). ``status`` reads N, the number of points and the
    render's PSNR. Every change redraws the picture in ``image`` (an ``ipywidgets.Image``); the sliders
    report only when released, so a drag places once.

    Args:
        image: (3, H, W) in [0, 1].
        ppm: (H, W) position probability map in [0, 1] (default: the pseudo-PPM of the quad-tree init,
            the quad-tree start's pseudo-PPM, ``pseudo_ppm(quadtree_init(image), H, W)``).
        kernel_size, density, target_count: the starting values (a ``target_count`` starts in that mode).
        layers: the overlays drawn at the start.
        background: "image", "render" or "PPM".
        zoom: display magnification (default: the factor, possibly fractional, that makes the picture's longer
            side ``max_display`` pixels); the placement itself always works at the image's size. The picture is
            shown at exactly that size beside the controls, so that the whole widget fits a 1366 x 768 screen.
        max_ellipses: at most this many ellipses are drawn (an even subset; all count in N and the render).
        format, quality: "jpeg" (small: a saved notebook keeps the last picture) at this quality, or "png"
            (crisp lines, several times larger).
        backend: the render backend.

    Attributes after each update: ``gaussians`` (:class:`~gilab.Gaussians2D`), ``points`` (M, 2),
    ``triangulation``, ``rendered`` (3, H, W), ``psnr`` (dB), ``gain`` (the density gain used),
    ``renders`` (pictures sent), ``placements`` (placements computed; a layer or background change
    redraws without placing again), ``error`` (the last message, e.g. a target count out of reach, or None).
    """

    def __init__(self, image: Tensor, ppm: Tensor | None = None, kernel_size: int = 3, density: float = 1.0,
                 target_count: int | None = None, layers=("points", "triangles"), background: str = "image",
                 zoom: float | None = None, max_display: int = 460, max_ellipses: int = 5000,
                 format: str = "jpeg", quality: int = 80, backend: str = "auto"):
        w = _widgets()
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
        self.target = image.detach().float().cpu()
        height, width = self.target.shape[-2:]
        if ppm is None:
            from ..placement import pseudo_ppm, quadtree_init

            ppm = pseudo_ppm(quadtree_init(self.target), *self.target.shape[1:])
        if tuple(ppm.shape) != (height, width):
            raise ValueError(f"ppm {tuple(ppm.shape)} must be (H, W) = {(height, width)}")
        self.ppm = ppm.detach().float().cpu().clamp(0, 1)
        self.height, self.width = height, width
        self.zoom = float(zoom) if zoom is not None else max_display / max(height, width)
        self.display_size = (max(1, round(width * self.zoom)), max(1, round(height * self.zoom)))  # (w, h) px
        self.max_ellipses, self.format, self.quality, self.backend = int(max_ellipses), format, int(quality), backend
        self.renders = 0
        self.placements = 0
        self.gaussians = self.points = self.triangulation = self.rendered = None
        self.psnr = float("nan")
        self.gain = float(density)
        self.error: str | None = None
        self.note: str | None = None
        self.last_ms = 0.0
        self._key = None
        self._quiet = False  # set while one change moves another control: one update, not two

        # one label width for every control, wide enough for the longest ("kernel k (px)"): no cut labels
        style = {"description_width": "90px"}
        wide = w.Layout(width="330px")
        self.kernel_size = w.IntSlider(int(kernel_size), min=1, max=16, description="kernel k (px)",
                                       continuous_update=False, style=style, layout=wide)
        self.density = w.FloatLogSlider(float(density), base=10, min=-1.5, max=1.5, step=0.05,
                                        description="density", continuous_update=False, readout_format=".2f",
                                        style=style, layout=wide)
        # toggle buttons get their label from a Label beside them (their own description wraps above them)
        self.mode = w.ToggleButtons(options=["density", "target count"], style={"button_width": "110px"},
                                    value="density" if target_count is None else "target count",
                                    tooltips=["N follows the PPM's mass, scaled by the density gain",
                                              "the density gain is searched so that N is within 2 % of the target"])
        most = self._most(kernel_size)
        self.target_count = w.IntSlider(min(int(target_count or most // 2), most), min=10, max=most, step=10,
                                        description="target N", continuous_update=False, style=style, layout=wide)
        self.background = w.ToggleButtons(options=["image", "render", "PPM"], value=background,
                                          style={"button_width": "72px"}, tooltips=["the target image",
                                                                        "the placed Gaussians, rendered",
                                                                        "the position probability map"])
        self.layers = {name: w.Checkbox(value=name in layers, description=name, indent=False,
                                        layout=w.Layout(width="auto"))
                       for name in ("points", "triangles", "ellipses")}
        # the picture's size is set in pixels: a flex box would otherwise stretch it to the notebook's width
        dw, dh = self.display_size
        self.image = w.Image(format=format, width=str(dw), height=str(dh),
                             layout=w.Layout(width=f"{dw}px", height=f"{dh}px", object_fit="contain",
                                             flex="0 0 auto"))
        self.status = w.HTML(layout=w.Layout(width=f"{max(dw, 300)}px"))  # wraps under the picture
        self.density.disabled = self.mode.value != "density"
        self.target_count.disabled = not self.density.disabled

        parts = {"kernel": self.kernel_size, "density": self.density, "mode": self.mode,
                 "target": self.target_count, "background": self.background, "image": self.image,
                 "status": self.status, **{f"layer-{name}": box for name, box in self.layers.items()}}
        for name, control in parts.items():
            control.add_class(f"gilab-pe-{name}")
            if name not in ("image", "status"):
                control.observe(self._on_change, names="value")
        def labelled(text, control):  # the same 90 px label column as the sliders' descriptions
            return w.HBox([w.Label(text, layout=w.Layout(width="90px", flex="0 0 auto")), control])

        controls = w.VBox([self.kernel_size, labelled("N from", self.mode), self.density, self.target_count,
                           labelled("show", self.background), labelled("draw", w.HBox(list(self.layers.values())))],
                          layout=w.Layout(margin="0 0 0 12px"))
        # the controls beside the picture, the status line right under it: one screen, nothing to scroll
        self.widget = w.HBox([w.VBox([self.image, self.status], layout=w.Layout(flex="0 0 auto")), controls],
                             layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.widget.add_class("gilab-placement-explorer")
        self.update()

    # -------------------------------------------------------------- model
    def _most(self, kernel_size: int) -> int:
        """The target slider's end: about the most Gaussians kernel size k gives, 2 H W / k^2 (two per cell)."""
        return max(20, 2 * self.height * self.width // int(kernel_size) ** 2 // 10 * 10)

    def _settings(self) -> tuple:
        target = self.target_count.value if self.mode.value == "target count" else None
        density = None if target is not None else float(self.density.value)
        return int(self.kernel_size.value), density, target

    def place(self) -> None:
        """Place again if a setting that changes the Gaussians moved (kernel size, density, mode, target)."""
        key = self._settings()
        if key == self._key:
            return
        k, density, target = key
        self.note = None
        made = place_steps(self.ppm, self.target, k, density) if target is None else self._by_count(k, target)
        from .. import metrics, render

        with torch.no_grad():
            rendered = render(made.gaussians, self.height, self.width, backend=self.backend)
        self.points, self.triangulation, self.gaussians, self.gain = (made.points, made.triangulation,
                                                                      made.gaussians, made.gain)
        self.rendered = rendered
        self.psnr = float(metrics.psnr(rendered, self.target))
        self.error = self.note
        self.placements += 1
        self._key = key

    def _by_count(self, k: int, target: int):
        """The placement with N within 2 % of ``target``, or the nearest one there is (``self.note`` says why).

        First :func:`gilab.placement.place`'s own search (:func:`~gilab.placement.place.search_count`, the same
        gains, so the same Gaussians as ``place(..., target_count=target)``), with the pooled map computed
        once. Where it misses, whole placements at a range of gains.

        Why it can miss: ``place`` predicts N as two per dithered point. For small counts that prediction is
        off, because the border points are spaced by the points' mean distance (a few clustered points get
        many border points, and N is not even monotone in the gain there); and N moves in steps of two or
        three, so a count like 30 within 2 % may not exist at all. So the fallback places each candidate
        gain for real (a small N places in milliseconds): 16 gains spanning predicted counts from a third
        to three times the target, then a bisection between the two nearest."""
        from ..placement.place import count_estimate, search_count

        estimate = count_estimate(self.ppm, k)  # what place() predicts: two Gaussians per dithered point

        made = {}

        def build_g(gain):
            placed = place_steps(self.ppm, self.target, k, gain)
            made[id(placed.gaussians)] = placed
            return placed.gaussians

        top_gain = saturating_density(self.ppm, k)
        try:
            return made[id(search_count(build_g, estimate, target, low=1e-6, high=top_gain, increasing=True,
                                     what="place()"))]
        except ValueError:
            return self._nearest_count(k, target, estimate, top_gain)

    def _nearest_count(self, k: int, target: int, estimate, top_gain: float):
        """Whole placements over a range of gains; the one nearest ``target`` (see :meth:`_by_count`)."""
        def gain_for(goal):  # the smallest gain whose cheap estimate reaches goal (bisection on log gain)
            lo, hi = math.log(1e-6), math.log(top_gain)
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if estimate(math.exp(mid)) < goal else (lo, mid)
            return math.exp(hi)

        tried = {}  # gain -> Placement

        def build(gain):
            if gain not in tried:
                tried[gain] = place_steps(self.ppm, self.target, k, gain)
            return tried[gain]

        if estimate(top_gain) < 1.1 * target:  # maybe more than the map can give: place the largest for real
            top = build(top_gain)
            if len(top.gaussians) < target * (1 - COUNT_RTOL):
                self.note = (f"target {target:,} is out of reach: with a point in every cell where the map is "
                             f"positive, k = {k} gives at most {len(top.gaussians):,} Gaussians here; showing those")
                return top
        g_lo, g_hi = gain_for(target / 3), gain_for(3 * target)
        for i in range(16):
            build(g_lo * (g_hi / g_lo) ** (i / 15))

        def nearest():
            return min(tried.values(), key=lambda m: (abs(len(m.gaussians) - target), len(m.gaussians)))

        # refine between the closest gain below the target and the closest above it, if they are neighbours
        for _ in range(12):
            best = nearest()
            if abs(len(best.gaussians) - target) <= COUNT_RTOL * target:
                return best
            gains = sorted(tried)
            pairs = [(a, b) for a, b in itertools.pairwise(gains)
                     if (len(tried[a].gaussians) - target) * (len(tried[b].gaussians) - target) < 0]
            if not pairs:
                break
            a, b = min(pairs, key=lambda ab: abs(len(tried[ab[0]].gaussians) - target)
                       + abs(len(tried[ab[1]].gaussians) - target))
            if b / a < 1 + 1e-6:
                break
            build(math.sqrt(a * b))
        best = nearest()
        if abs(len(best.gaussians) - target) <= COUNT_RTOL * target:
            return best
        counts = sorted({len(m.gaussians) for m in tried.values()})
        below = max((n for n in counts if n < target), default=None)
        above = min((n for n in counts if n > target), default=None)
        if below is None:
            why = f"the fewest it gave is {above:,}"
        elif above is None:
            why = f"the most it gave is {below:,}"
        else:
            why = f"N jumps from {below:,} to {above:,}"
        self.note = (f"no density gives N within 2 % of {target:,} at k = {k} ({why}: each point adds about two "
                     f"triangles, and the border points follow the points' spacing); showing "
                     f"N = {len(best.gaussians):,}, the nearest")
        return best

    # -------------------------------------------------------------- view
    def _on_change(self, change):
        if self._quiet:
            return
        if change["owner"] is self.kernel_size:
            self._quiet = True
            try:  # the target slider spans what this k can give: about 2 H W / k^2
                self.target_count.max = self._most(change["new"])
            finally:
                self._quiet = False
        if change["owner"] is self.mode:
            self._quiet = True
            try:
                by_count = change["new"] == "target count"
                self.density.disabled, self.target_count.disabled = by_count, not by_count
                if by_count and self.gaussians is not None:  # start from the current N
                    self.target_count.value = max(self.target_count.min, min(self.target_count.max,
                                                                             len(self.gaussians)))
                elif not by_count:  # keep the gain the search found
                    self.density.value = float(np.clip(self.gain, 10 ** self.density.min, 10 ** self.density.max))
            finally:
                self._quiet = False
        self.update()

    def update(self):
        """Place (if needed), draw the chosen background and layers, send the picture and the status line."""
        start = time.perf_counter()
        self.place()
        picture = self.draw()
        self.last_ms = 1000 * (time.perf_counter() - start)
        self.image.value = image_to_bytes(picture, self.format, quality=self.quality)
        self.renders += 1
        self.status.value = self._status()  # last: a watcher knows the picture above is the new one

    def draw(self):
        """The current picture: background (image, render or PPM) at ``zoom``, with the chosen overlays (PIL)."""
        from PIL import Image, ImageDraw

        z = self.zoom
        if self.background.value == "PPM":
            from matplotlib import colormaps

            base = (colormaps["magma"](self.ppm.numpy())[..., :3] * 255).round().astype(np.uint8)
        else:
            source = self.rendered if self.background.value == "render" and self.rendered is not None else self.target
            base = image_to_uint8(source)
        picture = Image.fromarray(base, "RGB").resize(self.display_size, Image.BICUBIC)
        if self.gaussians is None:
            return picture
        overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        if self.layers["triangles"].value:
            for triangle in (self.triangulation.triangles.numpy() * z).tolist():
                draw.polygon([tuple(p) for p in triangle], outline=TRIANGLE_COLOR)
        if self.layers["ellipses"].value:
            g = self.gaussians
            if len(g) > self.max_ellipses:
                g = g[torch.linspace(0, len(g) - 1, self.max_ellipses).round().long()]
            for outline in (ellipse_outlines(g, radius=1.0, points=20) * z).tolist():
                draw.line([tuple(p) for p in outline], fill=ELLIPSE_COLOR, width=1)
        if self.layers["points"].value:
            r = max(1.0, 0.12 * z * self.kernel_size.value ** 0.5)
            tri = self.triangulation
            for color, pts in ((POINT_COLOR, tri.points[:tri.num_input]), (BOUNDARY_COLOR, tri.points[tri.num_input:])):
                for x, y in (pts.numpy() * z).tolist():
                    draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
        return Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")

    def _status(self) -> str:
        import html

        if self.gaussians is None:
            return f"no placement: {html.escape(str(self.error))}"
        k, _, target = self._key
        how = f"density {self.gain:.2f}" if target is None else f"target {target:,} (gain {self.gain:.3g})"
        text = (f"N = {len(self.gaussians):,} Gaussians from {self.triangulation.num_input:,} points "
                f"(k = {k}, {how}); render {self.psnr:.2f} dB; {self.last_ms:.0f} ms (update {self.renders})")
        if self.error is not None:
            text = f"{text}<br><span style='color:#b35900'>⚠ {html.escape(self.error)}</span>"
        return text

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
