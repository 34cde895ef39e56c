"""The fine-tuner: fit Gaussians to one image with GaussianImage's recipe (docs/method.md, section 3).

    result = gilab.fit(image, n=10_000, iters=300)          # random start, as GaussianImage
    result = gilab.fit(image, init=gaussians, seconds=10)   # any start: quad-tree, network, a file
    result.gaussians, result.history.psnr, result.plot()

Recipe: loss = MSE(clamp(render, 0, 1), image) with sum blending; Adan (betas 0.98/0.92/0.99,
eps 1e-8, no weight decay) at lr 1e-3; StepLR halving every ``lr_step`` iterations. The trainable
parameters are GaussianImage's: means through tanh in normalised coordinates, the Cholesky factor
as an offset from (0.5, 0, 0.5) or scales |s + 0.5| and the angle in radians; colours as they are.
(GaussianImage trains the angle as 2 pi sigmoid(r), which cannot turn a Gaussian that starts axis-aligned.)

The module is called ``fitting`` (not ``fit``) so that ``gilab.fit`` is unambiguously the function.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ArgumentError
from .fused import FusedStep
from .gaussians import Gaussians2D, ndc_to_pixels, pixels_to_ndc
from .io import as_image
from .render import rasterize
from .starts import CHOLESKY_BOUND, KINDS, SCALE_BOUND, make_start, random_gaussians

__all__ = ["FitHistory", "FitResult", "FitState", "GaussianImageModel", "fit", "random_gaussians"]

DEFAULT_ITERS = 1000
#: On CUDA, losses are read back to the host this many steps at a time (each read stalls the GPU's queue).
CUDA_READ_EVERY = 50
CPU_READ_EVERY = 1
#: Warn when more than this fraction of the start's pixel values lie outside [0, 1]: the clamp kills their gradient.
SATURATED = 0.95
#: Warn when the PSNR has moved less than STALL_GAIN dB after STALL_CHECK iterations.
STALL_CHECK, STALL_GAIN = 200, 0.1
#: Thinnest standard deviation a start may have, pixels: thinner (or zero) covariances make infinite conics.
MIN_START_STD = 1e-2


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
            # The angle itself, in radians. GaussianImage trains 2 pi sigmoid(r); at an axis-aligned start
            # (angle 0, r = logit(~0)) that sigmoid's slope vanishes and the Gaussian can never turn.
            self.rotations = nn.Parameter(rs.rotations.clone())
        else:
            raise ValueError(f"param must be 'cholesky' or 'rs', got {param!r}")

    def gaussians(self) -> Gaussians2D:
        means = ndc_to_pixels(torch.tanh(self.xyz), self.height, self.width)
        size = (self.height, self.width)
        if self.param == "cholesky":
            cholesky = self.cholesky + self.cholesky.new_tensor(CHOLESKY_BOUND)
            return Gaussians2D.from_cholesky(means, cholesky, self.colors, self.opacities, size=size)
        scales = (self.scales + SCALE_BOUND).abs()
        return Gaussians2D.from_scale_rotation(means, scales, self.rotations, self.colors, self.opacities, size=size)


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

    def __repr__(self) -> str:
        last = f", PSNR {self.psnr[0]:.2f} -> {self.psnr[-1]:.2f} dB" if self.psnr else ""
        return f"FitHistory({len(self)} rows{last})"

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
    diverged: bool = False  # the loss turned non-finite; the Gaussians are the last finite step's
    fused: bool = False     # the iterations ran as gilab.fused's fused CPU step (else through autograd)

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

    def __repr__(self) -> str:
        return (f"FitResult(n={len(self.gaussians)}, iterations={self.iterations}, psnr={self.psnr:.2f} dB, "
                f"seconds={self.seconds:.1f}, backend={self.backend!r}, param={self.param!r}"
                + (", interrupted" if self.interrupted else "") + (", diverged" if self.diverged else "") + ")")

    def summary(self) -> str:
        stop = " (interrupted)" if self.interrupted else " (diverged: stopped at the last finite step)" \
            if self.diverged else ""
        return (f"{len(self.gaussians)} Gaussians, {self.iterations} iterations in {self.seconds:.1f} s{stop}: "
                f"PSNR {self.history.psnr[0]:.2f} -> {self.psnr:.2f} dB, "
                f"{self.iterations_per_second:.1f} it/s on backend {self.backend!r}"
                + (" (fused step)" if self.fused else ""))


# ------------------------------------------------------------------------ fit
def fit(image, init="random", *, n: int | None = None, iters: int | None = None, seconds: float | None = None,
        param: str = "cholesky", lr: float = 1e-3, lr_step: int = 20_000, seed: int = 0, backend: str = "auto",
        blend: str = "sum", min_scale: float | None = None, init_seconds: float = 0.0,
        callback: Callable[[FitState], bool | None] | None = None, callback_every: int = 10,
        progress: bool = True, fused: bool | None = None, return_on_interrupt: bool = True,
        checkpoint: str | Path | None = None, checkpoint_every: float = 120.0) -> FitResult:
    """Fit 2D Gaussians to ``image`` with GaussianImage's recipe.

    Args:
        image: (3, H, W) float tensor in [0, 1], a path, a PIL image or an array (see ``gilab.io.as_image``).
        init: "random" (``n`` Gaussians, default H W / 40), "quadtree" (at ``n`` if given), "net" (the
            shipped generator, at ``n`` if given), or a :class:`Gaussians2D` to start from.
        iters, seconds: the budget; the fit stops at whichever comes first (default 1000 iterations).
        param: "cholesky" or "rs" (rotation-scale), the trainable covariance parametrisation.
        lr, lr_step: Adan's learning rate, halved every ``lr_step`` iterations.
        seed: makes the random start (and so the whole run) reproducible.
        min_scale: clamp the start's scales to at least this many pixels (Instant-GI uses 0.5 for network starts).
        init_seconds: time already spent making ``init`` elsewhere, added to every ``history.seconds``.
        callback: called as ``callback(state)`` every ``callback_every`` iterations; return True to stop.
        progress: show a tqdm progress bar (a widget in Jupyter).
        fused: with backend "cpu", run each iteration as one fused numba step (:mod:`gilab.fused`: no autograd
            graph, 2-3x the iterations per second) instead of PyTorch's autograd. None (default): fused wherever
            it applies; False: always autograd (the reference the fused step is tested against).
        return_on_interrupt: Ctrl-C stops the fit and returns the result so far (True, for people at a prompt or in
            a notebook) or propagates as KeyboardInterrupt (False, for pipelines that save what a fit returns: a
            run cut short must not be kept as a finished one).
        checkpoint: a file that keeps the fit's state every ``checkpoint_every`` seconds (:mod:`gilab.fit_checkpoint`):
            if it exists, the fit continues from it (it must be a checkpoint of this fit: same image size, N and
            recipe), and a finished fit deletes it. A kill or Ctrl-C loses at most ``checkpoint_every`` seconds.

    Returns:
        A :class:`FitResult`. Ctrl-C stops the fit and returns the result so far (``interrupted=True``), unless
        ``return_on_interrupt`` is False.
        If the loss turns NaN or infinite (too large a learning rate, say), the fit stops, returns the last
        finite step's Gaussians with ``diverged=True`` and warns; it never returns NaN parameters.

    Raises:
        ImageError: an image of the wrong shape, dtype or range, or with NaN or infinite pixels.
        ArgumentError: a budget, count, learning rate or option out of range (checked before any work).
        NonFiniteError: a start with NaN or infinite parameters.
    """
    _adan([torch.zeros(1, requires_grad=True)])  # pytorch-optimizer's first Adan costs ~1 s: before the clock
    start = time.perf_counter()
    target = as_image(image)
    _, height, width = target.shape
    iters, seconds = _check_options(init, n, iters, seconds, param, lr, lr_step, blend, min_scale, callback_every)
    backend = _usable_backend(backend, target.device, blend)
    if isinstance(init, Gaussians2D):
        gaussians = init
    else:
        gaussians, _ = make_start(init, target, n, param=param, seed=seed)
    gaussians = _repaired(gaussians.detach().to(target.device, target.dtype)).check("the start")
    model = GaussianImageModel(gaussians, height, width, param, min_scale)

    def render_clamped():
        g = model.gaussians()
        return rasterize(g.means, g.conics(), g.colors, g.opacities, height, width, blend, backend).clamp(0, 1)

    stepper = _stepper(model, target, lr, lr_step, blend, backend, fused, render_clamped)

    history = FitHistory()
    elapsed = lambda: init_seconds + time.perf_counter() - start
    iteration, resumed = 0, None
    if checkpoint is not None:
        from .fit_checkpoint import identity as checkpoint_identity
        from .fit_checkpoint import load as load_checkpoint
        from .fit_checkpoint import save as save_checkpoint

        identity = checkpoint_identity(model, stepper, lr, lr_step, blend)
        resumed = load_checkpoint(checkpoint, model, stepper, identity) if Path(checkpoint).exists() else None
    if resumed is None:
        with torch.no_grad():
            g = model.gaussians()
            unclamped = rasterize(g.means, g.conics(), g.colors, g.opacities, height, width, blend, backend)
            history.append(0, elapsed(), torch.mean((unclamped.clamp(0, 1) - target) ** 2).item())
        init_time = elapsed()
        _warn_if_saturated(unclamped, len(g))
    else:  # the clock goes on from where the saved fit stopped
        columns, iteration, ran = resumed
        history = FitHistory(**columns)
        start = time.perf_counter() - (ran - init_seconds)
        init_time = history.seconds[0]
    last_save = time.perf_counter()
    # Reading a loss back to the host stalls a GPU's queue, so on CUDA the losses (and the NaN check) are read
    # CUDA_READ_EVERY steps at a time; on the CPU, every step. ``last_good`` holds the parameters of row
    # ``good_row``, the latest whose loss was read and found finite: a divergence rolls back to it.
    read_every = CUDA_READ_EVERY if target.device.type == "cuda" and callback is None else CPU_READ_EVERY
    read_every = 1 if isinstance(stepper, FusedStep) else read_every  # its loss is a host float anyway
    pending: list[tuple[int, Tensor]] = []  # (history row, its loss on the device), not yet read
    last_good, good_row = [p.detach().clone() for p in model.parameters()], iteration
    candidate = [p.detach().clone() for p in model.parameters()]  # batched reads: the batch's last parameters
    bar = _progress_bar(iters, seconds, progress)
    if iteration and iters is not None:
        bar.update(iteration)
    interrupted, diverged = False, False
    try:
        while (iters is None or iteration < iters) and (seconds is None or elapsed() < seconds):
            if read_every == 1:  # row k: the parameters after k steps; a non-finite loss updates nothing
                value = stepper.step(keep=last_good)
                history.set_loss(iteration, value)
                if not math.isfinite(value):
                    diverged = True
                    break
                good_row = iteration
            else:
                if len(pending) == read_every - 1:  # this step completes a batch: keep what it starts from
                    for c, p in zip(candidate, model.parameters()):
                        c.copy_(p.detach())
                pending.append((iteration, stepper.step(read=False)))
                if len(pending) >= read_every:
                    if _read_losses(history, pending) is not None:
                        diverged = True
                        break
                    last_good, candidate, good_row = candidate, last_good, iteration
            iteration += 1
            history.append(iteration, elapsed())
            _advance(bar, iteration, history, iters)
            # Saved only between whole steps (never from the Ctrl-C handler, which may land mid-update) and with
            # every loss read, so a resumed fit continues exactly this trajectory.
            if checkpoint is not None and not pending and time.perf_counter() - last_save >= checkpoint_every:
                save_checkpoint(checkpoint, model, stepper, history, iteration, history.seconds[-1], identity)
                last_save = time.perf_counter()
            if iteration == STALL_CHECK and read_every == 1:
                _warn_if_stalled(history, len(model.colors))
            if callback is not None and iteration % callback_every == 0:
                state = FitState(iteration, history.seconds[-1], history.psnr[-2], iters, seconds, model,
                                 stepper.image())
                if callback(state):
                    break
    except KeyboardInterrupt:
        if not return_on_interrupt:
            raise
        interrupted = True
    finally:
        bar.close()
    if pending and _read_losses(history, pending) is not None:
        diverged = True
    if diverged:  # step back to the last parameters that rendered to a finite loss
        iteration = _roll_back(model, last_good, history, good_row)
    if checkpoint is not None and not interrupted:  # finished (or stopped by the callback): nothing to resume
        Path(checkpoint).unlink(missing_ok=True)
    with torch.no_grad():
        final = render_clamped()
        history.set_loss(-1, torch.mean((final - target) ** 2).item())
    return FitResult(model.gaussians().detach().clone(), history, final, iteration, elapsed(), init_time, interrupted,
                     backend, param, diverged, isinstance(stepper, FusedStep))


class AutogradStep:
    """One iteration of the recipe through PyTorch's autograd: render, clamp, MSE, backward, Adan, StepLR.

    The reference every faster path (:class:`gilab.fused.FusedStep`) is held to, and the path on CUDA. Same
    contract as FusedStep: ``step(keep)`` returns the loss of the parameters before the update and updates
    nothing when it is not finite; with ``read=False`` (CUDA: no host sync) it returns the loss as a 0-d tensor
    and leaves the finiteness check to the caller.
    """

    def __init__(self, model: GaussianImageModel, target: Tensor, lr: float, lr_step: int, render_clamped):
        self.model, self.target, self.render_clamped = model, target, render_clamped
        self.optimizer = _adan(model.parameters(), lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=lr_step, gamma=0.5)
        self.current: Tensor | None = None

    def step(self, keep: list[Tensor] | None = None, read: bool = True):
        current = self.render_clamped()
        loss = torch.mean((current - self.target) ** 2)
        self.current = current.detach()
        if read:
            value = loss.item()
            if not math.isfinite(value):
                return value
            if keep is not None:
                for good, p in zip(keep, self.model.parameters()):
                    good.copy_(p.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return value if read else loss.detach()

    def image(self) -> Tensor | None:
        """(3, H, W) clamped render of the last step's parameters (before its update)."""
        return self.current

    def optimiser_state(self) -> tuple[dict[str, Tensor], dict]:
        """Adan's and the schedule's state as (tensors by name, JSON-able numbers), for :mod:`gilab.fit_checkpoint`."""
        saved = self.optimizer.state_dict()
        tensors = {f"{i}.{key}": v for i, state in saved["state"].items() for key, v in state.items() if torch.is_tensor(v)}
        numbers = {f"{i}.{key}": v for i, state in saved["state"].items() for key, v in state.items()
                   if not torch.is_tensor(v)}
        return tensors, {"numbers": numbers, "param_groups": saved["param_groups"],
                         "scheduler": self.scheduler.state_dict()}

    def load_optimiser_state(self, tensors: dict[str, Tensor], meta: dict):
        state: dict[int, dict] = {}
        for key, value in [*tensors.items(), *meta["numbers"].items()]:
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.scheduler.load_state_dict(meta["scheduler"])


def _stepper(model, target, lr, lr_step, blend, backend, fused, render_clamped):
    """The fused CPU step where it applies (and ``fused`` allows it), else autograd."""
    if fused is not False and backend == "cpu":
        ok, why = FusedStep.supports(model, target, blend)
        if ok:
            return FusedStep(model, target, lr=lr, lr_step=lr_step, blend=blend)
        if fused:
            raise ArgumentError(f"fused=True, but the fused step cannot run this fit: {why}")
    elif fused:
        raise ArgumentError(f"fused=True needs backend 'cpu' (this fit renders with {backend!r})")
    return AutogradStep(model, target, lr, lr_step, render_clamped)


def _check_options(init, n, iters, seconds, param, lr, lr_step, blend, min_scale, callback_every):
    """Every option of :func:`fit` that a user can get wrong, checked before any work; returns (iters, seconds)."""
    def positive_int(name, value, low=1):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ArgumentError(f"{name} must be an integer >= {low}, got {value!r}")

    def positive_number(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ArgumentError(f"{name} must be a positive finite number, got {value!r}")

    if not isinstance(init, Gaussians2D) and init not in KINDS:
        raise ArgumentError(f"init must be one of {', '.join(KINDS)} or a Gaussians2D, got {init!r}")
    if n is not None:
        positive_int("n", n)
    if iters is None and seconds is None:
        iters = DEFAULT_ITERS
    if iters is not None:
        positive_int("iters", iters, low=0)
    if seconds is not None:
        positive_number("seconds", seconds)
    if param not in ("cholesky", "rs"):
        raise ArgumentError(f"param must be 'cholesky' or 'rs', got {param!r}")
    positive_number("lr", lr)
    positive_int("lr_step", lr_step)
    if blend not in ("sum", "alpha"):
        raise ArgumentError(f"blend must be 'sum' or 'alpha', got {blend!r}")
    if min_scale is not None:
        positive_number("min_scale", min_scale)
    positive_int("callback_every", callback_every)
    return iters, seconds


def _usable_backend(backend: str, device: torch.device, blend: str) -> str:
    """The backend name ``backend`` resolves to on ``device``, or a one-line error if it cannot run here."""
    from .errors import BackendError
    from .render import backend_module, pick_backend

    name = pick_backend(device, blend) if backend == "auto" else backend
    ok, why = backend_module(name).available()
    if not ok:
        raise BackendError(f"render backend {name!r} is not available here: {why}")
    return name


def _repaired(start: Gaussians2D) -> Gaussians2D:
    """The start with every covariance thinner than MIN_START_STD widened to it (with a warning): a zero or
    near-zero covariance has an infinite conic, and one step of the fit would turn every parameter NaN."""
    if start.cholesky is not None:
        diag = start.cholesky[:, [0, 2]]
        thin = (diag.abs() < MIN_START_STD).any(-1)
    else:
        thin = (start.scales.abs() < MIN_START_STD).any(-1)
    if not bool(thin.any()):
        return start
    warnings.warn(f"{int(thin.sum())} of {len(start)} Gaussians in the start have a standard deviation below "
                  f"{MIN_START_STD} px; widened to {MIN_START_STD} px", stacklevel=3)
    if start.cholesky is not None:
        chol = start.cholesky.clone()
        for k in (0, 2):
            chol[:, k] = torch.where(chol[:, k].abs() < MIN_START_STD, torch.full_like(chol[:, k], MIN_START_STD),
                                     chol[:, k])
        return start._with(cholesky=chol)
    return start._with(scales=start.scales.abs().clamp(min=MIN_START_STD))


def _warn_if_saturated(unclamped: Tensor, n: int):
    """Warn when the clamp cuts most of the start off: there the clamped loss has no gradient at all."""
    outside = float(((unclamped > 1) | (unclamped < 0)).float().mean())
    if outside > SATURATED:
        warnings.warn(f"the start's render lies outside [0, 1] at {outside:.0%} of the pixel values (the sum of "
                      f"{n:,} overlapping Gaussians exceeds 1 there); the clamped loss has no gradient at those "
                      "pixels, so the fit may not move: use fewer or smaller Gaussians", stacklevel=3)


def _warn_if_stalled(history: FitHistory, n: int):
    """Warn when the first STALL_CHECK iterations barely moved the PSNR (too few Gaussians, say)."""
    gain = history.psnr[STALL_CHECK - 1] - history.psnr[0]
    if gain < STALL_GAIN:
        warnings.warn(f"the PSNR moved by {gain:.2f} dB in the first {STALL_CHECK} iterations with {n:,} "
                      "Gaussians: the fit is stalled (a saturated start, too few or too small Gaussians, or a "
                      "learning rate far too small)", stacklevel=3)


def _read_losses(history: FitHistory, pending: list[tuple[int, Tensor]]) -> int | None:
    """Copy the pending losses into their history rows (one host transfer) and empty the list; returns the
    first row whose loss is not finite, or None."""
    values = torch.stack([loss for _, loss in pending]).tolist()
    bad = None
    for (row, _), value in zip(pending, values):
        history.set_loss(row, value)
        if bad is None and not math.isfinite(value):
            bad = row
    pending.clear()
    return bad


def _roll_back(model: GaussianImageModel, last_good: list[Tensor], history: FitHistory, good_row: int) -> int:
    """Restore the parameters of ``good_row`` (the last with a finite loss), drop the history after it, warn;
    returns the iteration count the result now has."""
    bad = next((loss for loss in history.loss[good_row + 1:] if not math.isfinite(loss)), math.nan)
    with torch.no_grad():
        for good, p in zip(last_good, model.parameters()):
            p.copy_(good)
    for column in history.to_dict().values():
        del column[good_row + 1:]
    warnings.warn(f"the fit diverged (loss {bad}) after iteration {good_row}: stopped, and kept the Gaussians of "
                  f"iteration {good_row}; try a smaller learning rate", stacklevel=3)
    return good_row


def _adan(params, lr: float = 1e-3):
    """GaussianImage's optimiser.

    pytorch-optimizer's Adan matches the official sail-sg/Adan update to 1 ulp (tests/test_fit.py checks it
    against the published equations); adan-pytorch does not."""
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
