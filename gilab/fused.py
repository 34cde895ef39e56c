"""A fused CPU training step: one iteration of :func:`gilab.fit`'s recipe in three numba passes, no autograd.

Contract for ``fit()`` (backend ``"cpu"``)::

    ok, why = FusedStep.supports(model, target, blend)      # False (and why) -> keep the autograd loop
    step = FusedStep(model, target, lr=lr, lr_step=lr_step, blend=blend)
    while ...:
        value = step.step(keep=last_good)   # == loss.item() of the autograd loop, after its update
        history.set_loss(-1, value)
        if not math.isfinite(value):        # nothing was updated (and ``last_good`` not touched)
            diverged = True; break
        ...
        current = step.image()              # only when a callback is due: (3, H, W) clamped render

- ``step()`` does what one pass of fit()'s loop does between rendering and ``scheduler.step()``: render the
  model's current parameters, loss = mean((clamp(render, 0, 1) - target)^2), its gradient with respect to the
  trainable parameters, one Adan update (pytorch-optimizer's, betas 0.98/0.92/0.99, eps 1e-8, no weight
  decay) at the learning rate of StepLR(step_size=lr_step, gamma=0.5), then the schedule's step. It returns the
  loss of the render *before* the update, as a Python float. If that loss is NaN or infinite it updates nothing,
  so fit() can roll back as it does today. ``keep``: optional list of tensors shaped like
  ``list(model.parameters())``; on a finite loss the parameters are copied into it before the update (fit()'s
  ``last_good``).
- The update is in place, in the memory of the model's ``nn.Parameter`` tensors (numpy views of them), so
  ``model.gaussians()`` and callbacks see the current state with no copy. Replacing a parameter's ``.data``
  (rather than ``copy_`` into it) is noticed at the next step, which then works on the new memory.
- The Adan state lives here, not in a torch optimiser: a FusedStep replaces ``_adan`` and ``StepLR``, and
  the two paths cannot be mixed within one fit.
- ``image()`` is the clamped render of the last ``step()`` (the parameters before its update), a new (3, H, W)
  tensor; None before the first step.
- Supported: parametrisations "cholesky" and "rs", blends "sum" and "alpha" (background black, as fit()),
  float32 and float64 CPU tensors, with numba installed. Sum blending is the fused, fast path; alpha blending
  uses the ``cpu`` backend's alpha kernels with the same fused parametrisation, loss and Adan around them.

Each step is four numba passes (see :mod:`gilab.render._fused_kernels`): parameters -> means, conics and cutoff
rows, and band binning; the forward render with the loss and dL/dC computed band by band while the band is in
cache; the render's backward, Gaussian by Gaussian; and one pass over index-ordered chunks that applies the
chain rule through the parametrisation and Adan to each chunk's slice of every parameter. No PyTorch operation
runs in the loop. It agrees with the autograd loop to float32
rounding (tests/test_fused.py runs both for 20 iterations).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

__all__ = ["FusedStep"]

BETAS = (0.98, 0.92, 0.99)
EPS = 1e-8
GAMMA = 0.5  # StepLR's factor every lr_step iterations
#: The stages of a step, timed: parameters -> conics and band binning; render + loss + dL/dC (alpha: and the
#: render's backward); the render's backward (sum); the chain rule through the parametrisation and Adan.
STAGES = ("prepare", "forward", "backward", "update")


def _kernels():
    from .render import _fused_kernels  # numba loads on first use

    return _fused_kernels


class FusedStep:
    """One fused iteration of GaussianImage's recipe on a :class:`~gilab.fitting.GaussianImageModel`.

    Args:
        model: the model to train in place (CPU, float32 or float64).
        target: (3, H, W) image in [0, 1], H and W the model's.
        lr: Adan's initial learning rate; lr_step: halve it every ``lr_step`` steps (StepLR).
        blend: "sum" or "alpha".
    """

    def __init__(self, model, target: Tensor, lr: float = 1e-3, lr_step: int = 20_000, blend: str = "sum"):
        ok, why = self.supports(model, target, blend)
        if not ok:
            raise ValueError(f"FusedStep cannot run this fit: {why}")
        k = _kernels()
        self.model, self.blend = model, blend
        self.height, self.width = model.height, model.width
        self.kind = k.CHOLESKY if model.param == "cholesky" else k.RS
        self.lr0, self.lr_step = float(lr), int(lr_step)
        self.iteration = 0  # Adan steps taken
        dtype = model.xyz.dtype
        target = target.detach().to(dtype).numpy()
        pad = k.LANES if blend == "sum" else 0  # the sum kernels' rows are padded (see forward_sum_loss)
        self.target = np.zeros((3, self.height, self.width + pad), target.dtype)
        self.target[:, :, :self.width] = target
        self.target = self.target.reshape(-1)
        n = model.xyz.shape[0]
        self._bind()
        self.state = {name: np.zeros((4, p.size), p.dtype) for name, p in self._params.items()}  # Adan's
        self._grads = {name: np.zeros_like(p) for name, p in self._params.items()}
        self._sums = np.zeros((n, k.N_SUMS), np.float64)
        np_dtype = self._params["xyz"].dtype
        opacities = model.opacities.detach().to(dtype).contiguous().numpy()
        self.opacities = opacities
        with np.errstate(divide="ignore", invalid="ignore"):  # o <= 0: the Gaussian shows nowhere (level NaN)
            self.log_opacity = np.where(opacities > 0, np.log(255.0 * opacities.astype(np.float64)), np.nan)
        self.means, self.conics = np.empty((n, 2), np_dtype), np.empty((n, 3), np_dtype)
        self.jacobian = np.empty((n, 2), np.float64)
        self.level2, self.rows = np.empty(n, np.float64), np.empty((n, 2), np.int64)
        shape = (3 * self.height * (self.width + k.LANES),) if blend == "sum" else (3 * self.height * self.width,)
        self._image = np.zeros(shape, np_dtype)
        self._grad = np.zeros(shape, np_dtype)  # the padding columns stay zero: the backward reads them
        self._band_loss = np.zeros((self.height + k.BAND_ROWS - 1) // k.BAND_ROWS, np.float64)
        self._rendered = False
        #: wall seconds spent in each stage over all steps so far (see STAGES); the benchmark reads them
        self.seconds = dict.fromkeys(STAGES, 0.0)

    # ---------------------------------------------------------------------------------------------- API
    @staticmethod
    def supports(model, target: Tensor, blend: str) -> tuple[bool, str]:
        """(True, "") if FusedStep can run this fit, else (False, why): fit() falls back to autograd."""
        import importlib.util

        if importlib.util.find_spec("numba") is None:
            return False, "numba is not installed"
        if getattr(model, "param", None) not in ("cholesky", "rs"):
            return False, f"unknown parametrisation {getattr(model, 'param', None)!r}"
        if blend not in ("sum", "alpha"):
            return False, f"unknown blend {blend!r}"
        params = list(model.parameters()) + [model.opacities, target]
        if any(t.device.type != "cpu" for t in params):
            return False, "tensors not on the CPU"
        dtypes = {t.dtype for t in params[:-1]}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
            return False, f"parameters must all be float32 or all float64, got {sorted(map(str, dtypes))}"
        if tuple(target.shape) != (3, model.height, model.width):
            return False, f"target shape {tuple(target.shape)} is not (3, {model.height}, {model.width})"
        return True, ""

    @property
    def lr(self) -> float:
        """The learning rate of the next step (StepLR: halved every ``lr_step`` steps)."""
        return self.lr0 * GAMMA ** (self.iteration // self.lr_step)

    def step(self, keep: list[Tensor] | None = None) -> float:
        """One iteration; returns the loss of the parameters before it (see the module's contract)."""
        import numba

        k = _kernels()
        clock = [time.perf_counter()]
        self._bind()
        p = self._params
        eps = float(np.finfo(self.means.dtype).eps)
        threads = numba.get_num_threads()  # the kernels interleave their bands and chunks over these
        chunks = 32 * threads  # pieces of per-Gaussian work: a few per thread, for balance
        k.prepare(self.kind, p["xyz"], p["cov"], p["rot"], self.log_opacity, self.height, self.width, eps,
                  self.means, self.conics, self.jacobian, self.level2, self.rows)
        band_start, band_ids, order = k.bin_bands(self.rows, self.height)
        clock.append(time.perf_counter())
        sums = None
        if self.blend == "sum":
            k.forward_sum_loss(self.means, self.conics, p["colors"], self.opacities, self.level2, self.rows,
                               band_start, band_ids, self.target, self.height, self.width, self._image,
                               self._grad, self._band_loss, threads)
            total = float(self._band_loss.sum())
        else:
            total, sums = self._alpha_forward_backward(band_start, band_ids, threads)
        self._rendered = True
        clock.append(time.perf_counter())
        loss = total / (3 * self.height * self.width)
        if not math.isfinite(loss):
            return loss
        if keep is not None:
            with torch.no_grad():
                for good, param in zip(keep, self.model.parameters()):
                    good.copy_(param)
        if sums is None:
            sums = self._sums
            k.backward_sum(self.means, self.conics, p["colors"], self.opacities, self.level2, self.rows, order,
                           self._grad, self.height, self.width, sums, chunks, threads)
        clock.append(time.perf_counter())
        g, st = self._grads, self.state
        k.update(self.kind, p["xyz"], p["cov"], p["rot"], p["colors"], st["xyz"], st["cov"], st["rot"], st["colors"],
                 self.conics, self.jacobian, sums, g["xyz"], g["cov"], g["rot"], g["colors"],
                 adan_coefficients(self.lr, self.iteration + 1, self.means.dtype), self.iteration == 0, chunks)
        self.iteration += 1
        clock.append(time.perf_counter())
        for name, t0, t1 in zip(STAGES, clock, clock[1:]):
            self.seconds[name] += t1 - t0
        return loss

    def image(self) -> Tensor | None:
        """(3, H, W) clamped render of the last step's parameters (before its update), a new tensor."""
        if not self._rendered:
            return None
        image = self._image.reshape(3, self.height, -1)[:, :, :self.width]
        return torch.from_numpy(np.clip(image, 0, 1))

    def optimiser_state(self) -> tuple[dict[str, Tensor], dict]:
        """Adan's running tensors and the step count (which also sets the schedule), for gilab.fit_checkpoint."""
        return {name: torch.from_numpy(state.copy()) for name, state in self.state.items()}, {"iteration": self.iteration}

    def load_optimiser_state(self, tensors: dict[str, Tensor], meta: dict):
        for name, state in self.state.items():
            state[...] = tensors[name].numpy()
        self.iteration = int(meta["iteration"])
        self._rendered = False  # the parameters changed under it

    # ------------------------------------------------------------------------------------------ helpers
    def _bind(self):
        """numpy views of the model's parameters (again if one's memory was replaced since the last step)."""
        m = self.model
        tensors = [m.xyz, m.colors] + ([m.cholesky] if m.param == "cholesky" else [m.scales, m.rotations])
        pointers = [t.data_ptr() for t in tensors]
        if getattr(self, "_pointers", None) == pointers:
            return
        for t in tensors:
            if not t.is_contiguous():
                with torch.no_grad():
                    t.data = t.data.contiguous()
        view = lambda t: t.detach().numpy()
        self._params = {"xyz": view(m.xyz), "colors": view(m.colors)}
        if m.param == "cholesky":
            self._params["cov"] = view(m.cholesky)
            self._params["rot"] = np.zeros((m.xyz.shape[0], 1), self._params["xyz"].dtype)  # unused
        else:
            self._params["cov"] = view(m.scales)
            self._params["rot"] = view(m.rotations).reshape(-1, 1)
        self._pointers = [t.data_ptr() for t in tensors]

    def _alpha_forward_backward(self, band_start, band_ids, threads):
        """Alpha blending with the ``cpu`` backend's kernels: (loss sum, (N, N_SUMS) float64 gradient sums)."""
        from .render import _cpu_kernels as ck

        k = _kernels()
        h, w, n = self.height, self.width, self.means.shape[0]
        colors = self._params["colors"]
        self._image[:] = 0
        transmittance = np.ones(h * w, np.float64)
        stop = np.full(h * w, n, np.int32)
        ck.forward_alpha(self.means, self.conics, colors, self.opacities, self.level2, self.rows, band_start,
                         band_ids, h, w, self._image, transmittance, stop, threads)
        total = k.loss_gradient(self._image, self.target, self._grad)
        if not math.isfinite(total):
            return total, None
        partial = np.empty((band_ids.shape[0], ck.N_SUMS), np.float64)
        ck.backward_alpha(self.means, self.conics, colors, self.opacities, self.level2, self.rows, band_start,
                          band_ids, h, w, self._grad, transmittance, np.zeros(3 * h * w, np.float64), stop, partial,
                          threads)
        sums = np.zeros((n, ck.N_SUMS), np.float64)
        ck.reduce_partials(band_ids, partial, sums)
        return total, sums


def adan_coefficients(lr: float, step: int, dtype) -> np.ndarray:
    """Adan's scalars for step ``step`` (1-based) in ``dtype``, in the order ``_fused_kernels._adan`` reads
    them: 1 - b1, 1 - b2, b2, b3, 1 - b3, sqrt(1 - b3^k), eps, -lr / (1 - b1^k), -lr b2 / (1 - b2^k).
    Computed in float64 first, as pytorch-optimizer does in Python."""
    b1, b2, b3 = BETAS
    bc1, bc2, bc3 = 1 - b1**step, 1 - b2**step, math.sqrt(1 - b3**step)
    return np.array([1 - b1, 1 - b2, b2, b3, 1 - b3, bc3, EPS, -lr / bc1, -lr * b2 / bc2], dtype)
