"""The fine-tuner: fit Gaussians to one image with GaussianImage's recipe (DESIGN.md section 3).

    result = gilab.fit(image, n=10_000, iters=300)          # random start, as GaussianImage
    result = gilab.fit(image, init=gaussians, seconds=10)   # any start: quad-tree, network, a file
    result.gaussians, result.history.psnr, result.plot()

Recipe: loss = MSE(clamp(render, 0, 1), image) with sum blending; Adan (betas 0.98/0.92/0.99,
eps 1e-8, no weight decay) at lr 1e-3; StepLR halving every ``lr_step`` iterations. The trainable
parameters are GaussianImage's: means through tanh in normalised coordinates, the Cholesky factor
as an offset from (0.5, 0, 0.5) or scales |s + 0.5| and angle 2 pi sigmoid(r); colours as they are.

The module is called ``fitting`` (not ``fit``) so that ``gilab.fit`` is unambiguously the function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .gaussians import Gaussians2D, ndc_to_pixels, pixels_to_ndc
from .render import rasterize

CHOLESKY_BOUND = (0.5, 0.0, 0.5)
SCALE_BOUND = 0.5
DEFAULT_ITERS = 1000


# --------------------------------------------------------------------- starts
def random_gaussians(n: int, height: int, width: int, param: str = "cholesky", seed: int = 0,
                     device=None, dtype=torch.float32) -> Gaussians2D:
    """GaussianImage's random start: means uniform over the image, colours U[0,1)^3, opacity 1;
    Cholesky (l1, l2, l3) = U[0,1)^3 + (0.5, 0, 0.5) px, or scales |U[0,1)^2 + 0.5| px and
    angle 2 pi sigmoid(U[0,1))."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen, dtype=dtype)
    means = rand(n, 2) * torch.tensor([width, height], dtype=dtype)
    colors = rand(n, 3)
    if param == "cholesky":
        g = Gaussians2D.from_cholesky(means, rand(n, 3) + torch.tensor(CHOLESKY_BOUND, dtype=dtype), colors,
                                      size=(height, width))
    elif param == "rs":
        g = Gaussians2D.from_scale_rotation(means, (rand(n, 2) + SCALE_BOUND).abs(),
                                            2 * math.pi * torch.sigmoid(rand(n)), colors, size=(height, width))
    else:
        raise ValueError(f"param must be 'cholesky' or 'rs', got {param!r}")
    return g.to(device) if device is not None else g


class GaussianImageModel(nn.Module):
    """The trainable form of a :class:`Gaussians2D` (GaussianImage's parametrisation).

    Opacities are not trained (GaussianImage fixes them; sum blending makes them redundant with colour).
    """

    def __init__(self, init: Gaussians2D, height: int, width: int, param: str = "cholesky",
                 min_scale: float | None = None):
        super().__init__()
        self.height, self.width, self.param = height, width, param
        init = init.detach()
        if min_scale is not None:
            rs = init.to_scale_rotation()
            init = rs._with(scales=rs.scales.clamp(min=min_scale))
        ndc = pixels_to_ndc(init.means, height, width)
        # tanh keeps means inside the image; a start outside is pulled just inside.
        self.xyz = nn.Parameter(torch.atanh(ndc.clamp(-1 + 1e-6, 1 - 1e-6)))
        self.colors = nn.Parameter(init.colors.clone())
        self.register_buffer("opacities", init.opacities.clone())
        if param == "cholesky":
            bound = init.means.new_tensor(CHOLESKY_BOUND)
            self.cholesky = nn.Parameter(init.to_cholesky().cholesky - bound)
        elif param == "rs":
            rs = init.to_scale_rotation()
            self.scales = nn.Parameter(rs.scales - SCALE_BOUND)
            turns = torch.remainder(rs.rotations, 2 * math.pi) / (2 * math.pi)
            self.rotations = nn.Parameter(torch.logit(turns.clamp(1e-6, 1 - 1e-6)))
        else:
            raise ValueError(f"param must be 'cholesky' or 'rs', got {param!r}")

    def gaussians(self) -> Gaussians2D:
        means = ndc_to_pixels(torch.tanh(self.xyz), self.height, self.width)
        size = (self.height, self.width)
        if self.param == "cholesky":
            cholesky = self.cholesky + self.cholesky.new_tensor(CHOLESKY_BOUND)
            return Gaussians2D.from_cholesky(means, cholesky, self.colors, self.opacities, size=size)
        scales = (self.scales + SCALE_BOUND).abs()
        rotations = 2 * math.pi * torch.sigmoid(self.rotations)
        return Gaussians2D.from_scale_rotation(means, scales, rotations, self.colors, self.opacities, size=size)


# -------------------------------------------------------------------- history
@dataclass
class FitHistory:
    """One row per iteration (row 0 is the start): ``seconds`` since fit() began, init included."""

    iteration: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)

    def append(self, iteration: int, seconds: float, loss: float = math.nan):
        self.iteration.append(iteration)
        self.seconds.append(seconds)
        self.loss.append(math.nan)
        self.psnr.append(math.nan)
        self.set_loss(-1, loss)

    def set_loss(self, row: int, loss: float):
        """Fill in a row's loss (a step's loss is only known when the next step renders)."""
        self.loss[row] = loss
        self.psnr[row] = -10 * math.log10(loss) if loss > 0 else math.inf

    def __len__(self) -> int:
        return len(self.iteration)

    def to_dict(self) -> dict:
        return {"iteration": self.iteration, "seconds": self.seconds, "loss": self.loss, "psnr": self.psnr}

    def save(self, path: str | Path) -> Path:
        """Write ``.json`` or ``.csv`` (by suffix)."""
        import json

        path = Path(path)
        if path.suffix == ".csv":
            rows = ["iteration,seconds,loss,psnr"] + [
                f"{i},{s:.6f},{l:.8g},{p:.6f}" for i, s, l, p in zip(self.iteration, self.seconds, self.loss, self.psnr)]
            path.write_text("\n".join(rows) + "\n")
        else:
            path.write_text(json.dumps(self.to_dict()))
        return path


@dataclass
class FitState:
    """What a callback sees, every ``callback_every`` iterations."""

    iteration: int
    seconds: float
    psnr: float
    total_iters: int | None
    total_seconds: float | None
    model: GaussianImageModel
    image: Tensor  # (3, H, W) the current clamped render, detached

    @property
    def gaussians(self) -> Gaussians2D:
        """A copy of the current Gaussians (the optimiser keeps changing the model's tensors in place)."""
        return self.model.gaussians().detach().clone()


@dataclass
class FitResult:
    gaussians: Gaussians2D
    history: FitHistory
    image: Tensor          # (3, H, W) final clamped render
    iterations: int
    seconds: float          # init included
    init_seconds: float
    interrupted: bool
    backend: str
    param: str

    @property
    def psnr(self) -> float:
        return self.history.psnr[-1]

    @property
    def iterations_per_second(self) -> float:
        train = self.seconds - self.init_seconds
        return self.iterations / train if train > 0 else 0.0

    def plot(self, ax=None, x: str = "seconds"):
        """PSNR against ``x`` ("seconds" or "iteration"); returns the matplotlib Axes."""
        from .plots.fitting import plot_history

        return plot_history(self.history, ax=ax, x=x)

    def summary(self) -> str:
        stop = " (interrupted)" if self.interrupted else ""
        return (f"{len(self.gaussians)} Gaussians, {self.iterations} iterations in {self.seconds:.1f} s{stop}: "
                f"PSNR {self.history.psnr[0]:.2f} -> {self.psnr:.2f} dB, "
                f"{self.iterations_per_second:.1f} it/s on backend {self.backend!r}")


# ------------------------------------------------------------------------ fit
def fit(image, init="random", *, n: int | None = None, iters: int | None = None, seconds: float | None = None,
        param: str = "cholesky", lr: float = 1e-3, lr_step: int = 20_000, seed: int = 0, backend: str = "auto",
        blend: str = "sum", min_scale: float | None = None, init_seconds: float = 0.0,
        callback: Callable[[FitState], bool | None] | None = None, callback_every: int = 10,
        progress: bool = True) -> FitResult:
    """Fit 2D Gaussians to ``image`` with GaussianImage's recipe.

    Args:
        image: (3, H, W) float tensor in [0, 1], a path, a PIL image or an HWC array.
        init: "random" (needs ``n``), "quadtree" (at ``n`` if given), "net" (the shipped generator),
            or a :class:`Gaussians2D` to start from.
        n: number of Gaussians for "random" (default: H*W/40) and "quadtree".
        iters, seconds: the budget; the fit stops at whichever comes first (default 1000 iterations).
        param: "cholesky" or "rs" (rotation-scale), the trainable covariance parametrisation.
        lr, lr_step: Adan's learning rate, halved every ``lr_step`` iterations.
        seed: makes the random start (and so the whole run) reproducible.
        min_scale: clamp the start's scales to at least this many pixels (Instant-GI uses 0.5 for network starts).
        init_seconds: time already spent making ``init`` elsewhere, added to every ``history.seconds``.
        callback: called as ``callback(state)`` every ``callback_every`` iterations; return True to stop.
        progress: show a tqdm progress bar (a widget in Jupyter).

    Returns:
        A :class:`FitResult`. Ctrl-C stops the fit and returns the result so far (``interrupted=True``).
    """
    start = time.perf_counter()
    if isinstance(image, Tensor):
        target = image
    else:
        from .io import to_tensor_image

        target = to_tensor_image(image)
    if target.ndim != 3 or target.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {tuple(target.shape)}")
    _, height, width = target.shape
    if iters is None and seconds is None:
        iters = DEFAULT_ITERS
    gaussians = _make_start(init, target, n, param, seed)
    model = GaussianImageModel(gaussians.to(target.device, target.dtype), height, width, param, min_scale)
    if backend == "auto":
        from .render import pick_backend

        backend = pick_backend(target.device, blend)
    optimizer = _adan(model.parameters(), lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=0.5)

    def render_clamped():
        g = model.gaussians()
        return rasterize(g.means, g.conics(), g.colors, g.opacities, height, width, blend, backend).clamp(0, 1)

    history = FitHistory()
    elapsed = lambda: init_seconds + time.perf_counter() - start
    with torch.no_grad():
        current = render_clamped()
        history.append(0, elapsed(), torch.mean((current - target) ** 2).item())
    init_time = elapsed()
    bar = _progress_bar(iters, seconds, progress)
    iteration, interrupted = 0, False
    try:
        while (iters is None or iteration < iters) and (seconds is None or elapsed() < seconds):
            current = render_clamped()
            loss = torch.mean((current - target) ** 2)
            history.set_loss(-1, loss.item())  # row k: the parameters after k steps, rendered in step k + 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            iteration += 1
            history.append(iteration, elapsed())
            _advance(bar, iteration, history, iters)
            if callback is not None and iteration % callback_every == 0:
                state = FitState(iteration, history.seconds[-1], history.psnr[-2], iters, seconds, model,
                                 current.detach())
                if callback(state):
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    with torch.no_grad():
        final = render_clamped()
        history.set_loss(-1, torch.mean((final - target) ** 2).item())
    return FitResult(model.gaussians().detach().clone(), history, final, iteration, elapsed(), init_time, interrupted,
                     backend, param)


def _make_start(init, target: Tensor, n: int | None, param: str, seed: int) -> Gaussians2D:
    _, height, width = target.shape
    if isinstance(init, Gaussians2D):
        return init
    if init == "random":
        n = n if n is not None else max(1, height * width // 40)
        return random_gaussians(n, height, width, param, seed)
    if init == "quadtree":
        from .placement import quadtree_init

        return quadtree_init(target.cpu(), target_count=n)
    if init == "net":
        from .generator import Generator

        return Generator.from_pretrained()(target.cpu(), target_count=n)
    raise ValueError(f"init must be 'random', 'quadtree', 'net' or a Gaussians2D, got {init!r}")


def _adan(params, lr: float):
    # pytorch-optimizer's Adan matches the official sail-sg/Adan update to 1 ulp (tests/test_fit.py checks
    # it against the published equations); adan-pytorch does not.
    from pytorch_optimizer import Adan

    return Adan(params, lr=lr, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0)


def _progress_bar(iters, seconds, enabled):
    from tqdm.auto import tqdm

    if iters is not None:
        return tqdm(total=iters, disable=not enabled, desc="fit", unit="it", leave=False)
    return tqdm(total=round(seconds, 1), disable=not enabled, desc="fit", unit="s", leave=False,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{postfix}]")


def _advance(bar, iteration, history, iters):
    if bar.disable:
        return
    if iters is not None:
        bar.update(1)
    else:
        bar.n = round(min(history.seconds[-1], bar.total), 1)
    if iteration % 10 == 0:
        bar.set_postfix(psnr=f"{history.psnr[-2]:.2f} dB", refresh=iters is None)
