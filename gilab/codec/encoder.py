"""compress() and decompress(): an image in, a ``.gic`` bitstream out, and back at any resolution.

    result = compress(image, bpp=0.3, init="net", seconds=20)   # CompressResult
    result.data, result.bpp, result.psnr, result.ms_ssim, result.seconds, result.bits
    result.save("photo.gic")
    image = decompress(Path("photo.gic").read_bytes(), scale=2.0)  # (3, 2H, 2W) in [0, 1]

The encoder: a start (the shipped network, or GaussianImage's random one) with N Gaussians chosen for the rate,
``gilab.fit`` (float parameters) for most of the budget, quantisation-aware fine-tuning for the rest
(``qat_share``), then the bitstream. The budget counts everything, the start and the coding included.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ArgumentError
from .bitstream import FIXED_BYTES, decode, encode
from .finetune import CodecSettings, QuantisedModel, finetune_quantised
from .quantised import QuantisedGaussians
from .quantisers import canonical_cholesky, cholesky_quantiser, position_quantiser
from .rvq import fit_codebooks, nearest_codewords

INITS = ("net", "random", "net-zoom")
DEFAULT_ITERS = 1000
#: What entropy coding saves below the raw bit depth, bits per Gaussian: on each Cholesky factor (6-bit factors
#: took 5.1-5.3 bits on Kodak at 0.3 bpp) and on each colour stage (64 codewords took 5.6-5.7 bits). Only used
#: to choose N for a target rate.
CHOLESKY_SAVING = 0.8
STAGE_SAVING = 0.35


@dataclass
class CompressResult:
    """What :func:`compress` made and how good it is.

    data: the bitstream; bits: its size by component (header, positions, covariances, colours), bits, which add
    up to ``8 * len(data)``; psnr (dB) and ms_ssim: the decoded image against the input; seconds: encoding
    wall time, start and coding included; decode_seconds: :func:`decompress` at scale 1; float_psnr: the fit
    before quantisation, dB; iterations: (float fit, quantisation-aware) iterations run; image: the decoded
    (3, H, W) in [0, 1].
    """

    data: bytes
    size: tuple[int, int]
    n: int
    init: str
    bits: dict[str, int]
    psnr: float
    ms_ssim: float
    seconds: float
    decode_seconds: float
    float_psnr: float
    iterations: tuple[int, int]
    image: Tensor = field(repr=False)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file: 8 len(data) / (H W)."""
        return 8 * len(self.data) / (self.size[0] * self.size[1])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bitstream to ``path`` (atomically: an interrupted write leaves no half file)."""
        from ..files import write_atomic

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.data)
        return path

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v / self.n:.1f}" for k, v in self.bits.items() if k != "header")
        return (f"{self.n:,} Gaussians ({self.init} start), {len(self.data):,} bytes = {self.bpp:.3f} bpp: "
                f"PSNR {self.psnr:.2f} dB (before quantisation {self.float_psnr:.2f}), MS-SSIM {self.ms_ssim:.4f}; "
                f"encoded in {self.seconds:.1f} s ({self.iterations[0]} + {self.iterations[1]} iterations), "
                f"decoded in {self.decode_seconds * 1000:.0f} ms; "
                f"bits per Gaussian: {parts}")


def compress(image, bpp: float | None = None, n: int | None = None, *, init: str = "net",
             seconds: float | None = None, iters: int | None = None, settings: CodecSettings | None = None,
             qat_share: float = 0.3, lr: float = 1e-2, qat_lr: float = 1e-3, seed: int = 0, backend: str = "auto",
             generator=None, progress: bool = False) -> CompressResult:
    """Compress ``image`` into a ``.gic`` bitstream of quantised Gaussians.

    Args:
        image: (3, H, W) float tensor in [0, 1], a path, a PIL image or an array (``gilab.io.as_image``).
        bpp: target rate, bits per pixel; sets N from an estimate of the bits per Gaussian, so the result's
            ``bpp`` is close to it, not equal. Give ``bpp`` or ``n``.
        n: the number of Gaussians instead of a rate.
        init: "net" (the shipped generator, Instant GaussianImage), "random" (GaussianImage's start) or
            "net-zoom" (the generator shown the image downscaled to where ``n`` is its usual density:
            :func:`gilab.starts.zoomed_net_start`).
        seconds, iters: the encoding budget, wall-clock seconds (everything included) or iterations
            (float fit + quantisation-aware); default 1000 iterations.
        settings: bit depths and codebooks (:class:`CodecSettings`; default 12-bit positions, 6-bit Cholesky,
            colours in 2 stages of 64 codewords).
        qat_share: the share of the budget spent on quantisation-aware fine-tuning.
        lr: Adan's learning rate of the float fit (1e-2: with a few thousand Gaussians and a budget of seconds,
            ten times fit()'s default converges faster and no less far).
        qat_lr: the quantisation-aware phase's starting rate, falling to zero (:func:`finetune_quantised`: at
            1e-2 the quantised loss wandered and ended below rounding once).
        seed: the random start's and the k-means' seed.
        generator: the :class:`gilab.generator.Generator` for ``init="net"`` (default: the shipped weights,
            loaded once per process, outside the timed budget, as a codec keeps its model in memory).
        progress: show the float fit's progress bar.

    Returns:
        A :class:`CompressResult` (the bytes, the rate, PSNR, MS-SSIM, times).

    Raises:
        ImageError: an unusable image. ArgumentError: an option out of range (checked before any work).
    """
    tic = time.perf_counter()
    from ..io import as_image

    target = as_image(image)
    _, height, width = target.shape
    settings = settings if settings is not None else CodecSettings()
    _check_options(bpp, n, init, seconds, iters, settings, qat_share, lr, qat_lr)
    if n is None:
        n = gaussians_for_rate(bpp, height, width, settings)
    if init in ("net", "net-zoom") and generator is None:
        tic += _timed(_shipped_generator)  # loading the weights is not encoding: the clock skips it
        generator = _shipped_generator()
    fitted = _fit_float(target, n, init, seconds, iters, qat_share, lr, seed, backend, progress, tic, generator)
    model = QuantisedModel(fitted.gaussians, height, width, settings, seed).to(target.device)
    if seconds is not None:
        qat = finetune_quantised(model, target, seconds=max(seconds - (time.perf_counter() - tic), 1e-3), lr=qat_lr,
                                 backend=backend)
    else:
        qat = finetune_quantised(model, target, iters=_split(iters, qat_share)[1], lr=qat_lr, backend=backend)
    quantised = model.quantised()
    data, bits = encode(quantised)
    encode_seconds = time.perf_counter() - tic
    return _scored(data, bits, len(quantised), target, init, fitted.psnr, (fitted.iterations, qat), encode_seconds,
                   backend)


@functools.cache
def _shipped_generator():
    from ..generator import Generator

    return Generator.from_pretrained()


def _timed(fn) -> float:
    """Seconds ``fn()`` takes (0 on later calls of a cached function)."""
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def _fit_float(target, n, init, seconds, iters, qat_share, lr, seed, backend, progress, tic, generator):
    """The start and gilab.fit's float fine-tune (a FitResult)."""
    from ..fitting import fit
    from ..starts import make_start

    start, _ = make_start(init, target, n, seed=seed, generator=generator)
    elapsed = time.perf_counter() - tic
    if seconds is not None:
        float_seconds = seconds * (1 - qat_share)
        budget = {"seconds": float_seconds} if float_seconds > elapsed else {"iters": 0}
    else:
        budget = {"iters": _split(iters, qat_share)[0]}
    # Ctrl-C propagates: a file must never be written from a fit cut short without a word.
    return fit(target, init=start, lr=lr, seed=seed, backend=backend, init_seconds=elapsed, progress=progress,
               return_on_interrupt=False, **budget)


def _split(iters: int | None, qat_share: float = 0.3) -> tuple[int, int]:
    """(float iterations, quantisation-aware iterations) for an iteration budget."""
    iters = DEFAULT_ITERS if iters is None else iters
    qat = round(iters * qat_share)
    return iters - qat, qat


def _scored(data, bits, n, target, init, float_psnr, iterations, encode_seconds, backend) -> CompressResult:
    """The result, with the decoded image scored against the target (decoding timed)."""
    from ..metrics import ms_ssim, psnr

    tic = time.perf_counter()
    decoded = decompress(data, backend=backend)
    decode_seconds = time.perf_counter() - tic
    decoded = decoded.to(target.device)
    return CompressResult(data, tuple(target.shape[1:]), n, init, bits, float(psnr(decoded, target)),
                          float(ms_ssim(decoded, target, fallback="scales")), encode_seconds, decode_seconds,
                          float_psnr, iterations, decoded)


def decompress(data, scale: float = 1.0, backend: str = "auto") -> Tensor:
    """Decode a ``.gic`` bitstream and render it.

    Args:
        data: the bytes (or a path to a ``.gic`` file).
        scale: render at ``scale`` times the encoded resolution (Gaussians have no pixel grid).

    Returns:
        (3, round(H scale), round(W scale)) float32 in [0, 1], on the CPU.

    Raises:
        BitstreamError: a damaged, truncated, foreign or newer file. FileNotFoundError: no such path.
        ArgumentError: a scale that is not a positive number, or gives too many pixels.
    """
    from ..render import render

    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        data = path.read_bytes()
    gaussians = decode(data).to_gaussians()
    return render(gaussians, scale=scale, backend=backend).clamp(0, 1)


def quantise(gaussians, settings: CodecSettings | None = None, size: tuple[int, int] | None = None,
             seed: int = 0) -> QuantisedGaussians:
    """The codec's quantisers applied to ``gaussians`` as they are: no fine-tuning, a fraction of a second.

    What :func:`compress` does after its fits, without the quantisation-aware training: positions onto the grid
    of ``2**position_bits`` cells per axis, canonical Cholesky factors onto ``2**cholesky_bits`` levels over
    their range, colours by residual VQ (k-means codebooks, rounded to float16). ``encode(quantise(g))`` is a
    valid ``.gic`` file and ``quantise(g).to_gaussians()`` what it decodes to, so a widget can trade bits for
    quality live from one fit.

    Args:
        gaussians: a :class:`~gilab.Gaussians2D` of N Gaussians (either parametrisation): means (N, 2) px,
            colours (N, 3). The bitstream stores no opacities (sum blending makes them redundant with colour),
            so colours are multiplied by them (a fitted set has opacity 1: nothing changes).
        settings: bit depths and codebooks (default :class:`CodecSettings`: 12-bit positions, 6-bit Cholesky,
            2 colour stages of 64 codewords).
        size: (height, width) of the canvas, pixels; default ``gaussians.size``.
        seed: the k-means seed.

    Returns:
        :class:`QuantisedGaussians` in canonical order: positions (N, 2), cholesky (N, 3) and colours (N, S)
        int64 indices, codebooks (S, K, 3) float32, cholesky_low / cholesky_high (3,) float32.

    Raises:
        ArgumentError: no canvas size (neither ``size`` nor ``gaussians.size``), or settings out of range.
    """
    settings = (settings if settings is not None else CodecSettings()).check()
    size = size if size is not None else gaussians.size
    if size is None:
        raise ArgumentError("give size=(height, width): these Gaussians do not record their canvas")
    height, width = (int(v) for v in size)
    g = gaussians.detach().to("cpu", torch.float32).to_cholesky()
    colors = g.colors * g.opacities[:, None]
    chol = cholesky_quantiser(g.cholesky, settings.cholesky_bits)
    codebooks = fit_codebooks(colors, settings.stages, settings.codebook_size, seed)
    return QuantisedGaussians(
        (height, width), settings.position_bits,
        position_quantiser(height, width, settings.position_bits).indices(g.means), settings.cholesky_bits,
        chol.low.clone(), chol.high.clone(), chol.indices(canonical_cholesky(g.cholesky)), codebooks,
        nearest_codewords(colors, codebooks)).canonical()


def gaussians_for_rate(bpp: float, height: int, width: int, settings: CodecSettings) -> int:
    """The N whose bitstream should take about ``bpp`` bits per pixel (at least 1).

    Per Gaussian: the position gap about log2(e 4**position_bits / N) bits (sorted cells), each Cholesky factor
    its bit depth less :data:`CHOLESKY_SAVING`, each colour stage log2(``codebook_size``) less
    :data:`STAGE_SAVING`; plus a header of fixed fields, float16 codebooks and histograms.
    """
    budget = bpp * height * width
    tables = 3 * 2 ** settings.cholesky_bits * 1.5 + settings.stages * settings.codebook_size * 1.5 + 16
    header = 8 * (FIXED_BYTES + 6 * settings.stages * settings.codebook_size + tables)
    colour = settings.stages * max(math.log2(max(settings.codebook_size, 2)) - STAGE_SAVING, 0.5)
    covariance = 3 * max(settings.cholesky_bits - CHOLESKY_SAVING, 1.0)
    n = max(budget / 64, 1.0)
    for _ in range(20):  # fixed point: the position cost depends on N only through a logarithm
        position = max(math.log2(math.e * 4 ** settings.position_bits / n), 1.0)
        n = max((budget - header) / (position + covariance + colour), 1.0)
    return max(1, int(n))


def _check_options(bpp, n, init, seconds, iters, settings, qat_share, lr, qat_lr):
    """Everything a caller can get wrong, before any work; one-line ArgumentErrors."""
    def positive(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ArgumentError(f"{name} must be a positive finite number, got {value!r}")

    if (bpp is None) == (n is None):
        raise ArgumentError("give exactly one of bpp (a target rate) and n (a number of Gaussians)")
    if bpp is not None:
        positive("bpp", bpp)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ArgumentError(f"n must be an integer >= 1, got {n!r}")
    if init not in INITS:
        raise ArgumentError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if seconds is not None and iters is not None:
        raise ArgumentError("give seconds or iters, not both")
    if seconds is not None:
        positive("seconds", seconds)
    if iters is not None and (isinstance(iters, bool) or not isinstance(iters, int) or iters < 0):
        raise ArgumentError(f"iters must be an integer >= 0, got {iters!r}")
    if not (isinstance(qat_share, (int, float)) and 0 <= qat_share <= 1):
        raise ArgumentError(f"qat_share must be a number in [0, 1], got {qat_share!r}")
    positive("lr", lr)
    positive("qat_lr", qat_lr)
    if not isinstance(settings, CodecSettings):
        raise ArgumentError(f"settings must be a CodecSettings, got {type(settings).__name__}")
    settings.check()
