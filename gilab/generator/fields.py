"""Per-triangle features and the three fields that turn each triangle into one Gaussian (docs/method.md, 4.6-4.7).

    fields = GaussianFields(feat_dim=64, hidden=128)
    out = fields(features, image, mesh)     # one image; mesh = Mesh (triangulation + ellipses)
    out.gaussians                           # Gaussians2D, differentiable w.r.t. every parameter of ``fields``

Per triangle (T of them) the input is 86 values:
  64  feature-map samples at the 3 vertices and the ellipse centre (4 x 64, reduced by an MLP 256-256-128-64 + LN)
  12  RGB at the same 4 points
   6  the triangle's vertices, centred on its centroid and scaled by sqrt(1 / area)
   4  the ellipse's centre (same frame), axis ratio (minor / major) and angle / pi in [0, 1)
(With ``angle="offset"`` the first two ellipse values are (cos 2 theta, sin 2 theta) of its angle instead of its
centre, which equals the centroid and so was always 0; see ``turned`` for the two angle parametrisations.)
The BC field places the mean inside the triangle (softmax barycentric weights). The mean and the 3 neighbours'
means (detached, same frame, 8 values) are appended for the Sigma field (2 scale factors in (0, scale_max) times
the ellipse semi-axes; an angle offset around the ellipse's angle) and the opacity field (a factor in (0, 1) on
the RGB sampled at the mean: sum blending adds overlapping Gaussians, so colours must be scaled down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..gaussians import Gaussians2D
from ..placement.ellipses import triangle_areas


@dataclass
class Mesh:
    """The output of placement for one image, as tensors (all float32 px unless said otherwise).

    points (P, 2) triangulation vertices (x, y), boundary points included; simplices (T, 3) int64;
    neighbors (T, 3) int64 (a missing neighbour is the triangle itself); centres (T, 2), axes (T, 2)
    semi-axes, major first; angles (T,) radians, the major axis' direction.
    """

    points: Tensor
    simplices: Tensor
    neighbors: Tensor
    centres: Tensor
    axes: Tensor
    angles: Tensor

    def __len__(self) -> int:
        return self.simplices.shape[0]

    def to(self, device) -> Mesh:
        return Mesh(*(getattr(self, k).to(device) for k in ("points", "simplices", "neighbors", "centres",
                                                             "axes", "angles")))


@dataclass
class FieldsOutput:
    gaussians: Gaussians2D
    scales: Tensor   # (T, 2) px, for L_scale
    weights: Tensor  # (T, 3) barycentric weights


def sample(maps: Tensor, points: Tensor, height: int, width: int) -> Tensor:
    """Bilinear samples of ``maps`` (C, h, w), which covers a (height, width) px canvas, at ``points`` (P, 2) px.

    Returns (P, C). Any map resolution works: pixel centres sit at (j + 0.5) * width / w, so the map's
    extent, not its pixel grid, defines the mapping (grid_sample with align_corners=False).
    """
    scale = points.new_tensor([2.0 / width, 2.0 / height])
    grid = (points * scale - 1).view(1, 1, -1, 2).to(maps.dtype)
    out = F.grid_sample(maps[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


def mlp(sizes: list[int], norm_out: bool = False) -> nn.Sequential:
    """Linear-GELU-...-Linear with the given sizes (and a final LayerNorm if ``norm_out``)."""
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    if norm_out:
        layers.append(nn.LayerNorm(sizes[-1]))
    return nn.Sequential(*layers)


def triangle_frame(vertices: Tensor) -> tuple[Tensor, Tensor]:
    """(T, 3, 2) -> centroid (T, 2) and 1 / sqrt(area) (T, 1): a frame in which every triangle has unit area,
    so the fields see shapes, not sizes (near-zero-area slivers at the border are floored at 1e-4 px^2)."""
    area = triangle_areas(vertices).abs()
    return vertices.mean(1), area.clamp(min=1e-4).rsqrt()[:, None]


def turned(ellipse_angles: Tensor, r: Tensor, angle: str = "offset") -> Tensor:
    """(T,) radians: the Sigma field's output ``r`` (T,) applied to the ellipses' angles (T,) radians.

    "offset": theta_e + (pi / 2) tanh(r), any orientation from any triangle (orientations repeat every pi);
    "sigmoid": pi sigmoid(tanh(r) + logit(theta_e / pi)), the paper's form, whose reach shrinks to nothing as
    theta_e / pi nears 0 or 1 (an axis-aligned triangle cannot turn).
    """
    if angle == "offset":
        return ellipse_angles + (math.pi / 2) * torch.tanh(r)
    turn = torch.remainder(ellipse_angles, math.pi) / math.pi
    return math.pi * torch.sigmoid(torch.tanh(r) + torch.logit(turn.clamp(1e-4, 1 - 1e-4)))


class GaussianFields(nn.Module):
    """Feature reducer + BC, Sigma and opacity fields. Swap any of the four MLPs for your own."""

    GEOMETRY = 6 + 4

    def __init__(self, feat_dim: int = 64, hidden: int = 128, scale_max: float = 2.0, angle: str = "offset"):
        super().__init__()
        self.scale_max, self.angle = scale_max, angle
        self.reduce = mlp([4 * feat_dim, 256, 128, feat_dim], norm_out=True)
        d = feat_dim + 12 + self.GEOMETRY
        self.bc = mlp([d, hidden, hidden, 3])
        self.sigma = mlp([d + 8, hidden, hidden, 3])
        self.opacity = mlp([d + 8, hidden, hidden, 1])
        self._init_outputs()

    def _init_outputs(self):
        # Start from a sensible render: mean at the centroid, std about 0.55 x the ellipse's semi-axes (sum
        # blending then roughly tiles the plane: 2 pi s1 s2 ~ triangle area), angle = the ellipse's, opacity 0.8.
        for head in (self.bc, self.sigma, self.opacity):
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        with torch.no_grad():
            self.sigma[-1].bias[:2] = math.log(0.55 / (self.scale_max - 0.55))
            self.opacity[-1].bias.fill_(math.log(0.8 / 0.2))

    def forward(self, features: Tensor, image: Tensor, mesh: Mesh) -> FieldsOutput:
        """features (F, h, w) covering the (padded) image; image (3, H', W') the network's input, in [0, 1];
        mesh in px of that canvas. Returns T Gaussians (sum blending, opacity 1: colour carries the factor)."""
        _, height, width = image.shape
        tri = mesh.points[mesh.simplices]                          # (T, 3, 2)
        centroid, inv = triangle_frame(tri)
        # Sample once per point and per centre, then gather per triangle.
        def at(maps):
            corners = sample(maps, mesh.points, height, width)[mesh.simplices]       # (T, 3, C)
            return torch.cat([corners.flatten(1), sample(maps, mesh.centres, height, width)], 1)

        feats, rgb = at(features), at(image)                                           # (T, 4F), (T, 12)
        shape = ((tri - centroid[:, None]) * inv[:, None]).flatten(1)                 # (T, 6)
        ratio = mesh.axes[:, 1:2] / mesh.axes[:, 0:1].clamp(min=1e-6)
        turn = torch.remainder(mesh.angles, math.pi) / math.pi                       # (T,) in [0, 1)
        if self.angle == "offset":  # the orientation as a point on a circle: 0 and pi are the same ellipse
            where = torch.stack([torch.cos(2 * mesh.angles), torch.sin(2 * mesh.angles)], 1)
        else:  # the paper's inputs (the centre is the centroid, so these two are always 0)
            where = (mesh.centres - centroid) * inv
        ellipse = torch.cat([where, ratio, turn[:, None]], 1)
        x = torch.cat([self.reduce(feats), rgb, shape, ellipse], 1)                   # (T, 86)

        weights = torch.softmax(self.bc(x), -1)                                       # (T, 3)
        means = (weights[..., None] * tri).sum(1)                                     # inside the triangle
        around = torch.cat([means[:, None], means[mesh.neighbors]], 1).detach()       # (T, 4, 2)
        x = torch.cat([x, ((around - centroid[:, None]) * inv[:, None]).flatten(1)], 1)

        s = self.sigma(x)
        scales = self.scale_max * torch.sigmoid(s[:, :2]) * mesh.axes
        rotations = turned(mesh.angles, s[:, 2], self.angle)
        colors = torch.sigmoid(self.opacity(x)) * sample(image, means, height, width)
        g = Gaussians2D.from_scale_rotation(means, scales, rotations, colors, size=(height, width))
        return FieldsOutput(g, scales, weights)
