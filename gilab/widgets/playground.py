"""The Gaussian playground: a few 2D Gaussians under sliders, rendered live (notebook 01)."""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from ..gaussians import Gaussians2D
from .common import _hex_to_rgb, _render, _widgets, ellipse_outlines, image_to_png, image_to_uint8

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
            from ..render import pick_backend

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
                # step 0.001: the values below 1/255 (where a Gaussian vanishes) are reachable, e.g. 0.003
                "opacity": w.FloatSlider(spec["opacity"], min=0, max=1, step=0.001, readout_format=".3f",
                                         description="opacity"),
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

