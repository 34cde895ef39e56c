"""The ``.gic`` file: a versioned, self-describing bitstream of quantised Gaussians. No pickle, no code runs.

Layout (little-endian; "varints" are unsigned LEB128):

    magic        4 bytes  b"\\x89GIC"  (the high byte catches 7-bit transfers, as PNG's does)
    version      u8       FORMAT_VERSION
    height, width, count                          u32 each
    position_bits, cholesky_bits, stages          u8 each
    codebook_size u16, rice_bits u8
    cholesky_low[3], cholesky_high[3]             float32
    codebooks    stages x codebook_size x 3       float16
    tables       varints: gap-quotient alphabet A and its A counts; 3 x 2**cholesky_bits Cholesky counts;
                 stages x codebook_size colour counts (the histograms the range coder's models are built from)
    lengths      varints: bytes of the three range-coded sections
    positions    range-coded gap quotients, then count x rice_bits remainder bits, packed
    covariances  range-coded Cholesky indices (l1, then l2, then l3)
    colours      range-coded codeword indices (stage 1, then stage 2, ...)
    crc32        u32 of everything before it

Positions are coded as the gaps between consecutive cell indices in raster order (see QuantisedGaussians.canonical),
each split Rice-style into a quotient (range-coded with its histogram) and ``rice_bits`` low bits (stored as they
are: they are close to uniform). ``rice_bits`` is chosen per file to make the section smallest.

:func:`encode` returns the bytes and how many bits each component took (they add up to ``8 * len(data)``).
:func:`decode` checks the magic, the version and the checksum before it reads anything else, and every count and
length after; any problem is a :class:`BitstreamError` with a one-line message.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import torch

from .entropy import decode_streams, encode_streams, histogram, pack_bits, read_varints, unpack_bits, varints
from .errors import BitstreamError
from .quantised import QuantisedGaussians

MAGIC = b"\x89GIC"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<4sBIIIBBBHB6f")  # magic ... cholesky ranges
#: Bytes every file has whatever it holds: the fixed fields and the checksum.
FIXED_BYTES = _FIXED.size + 4
MAX_BITS = 16  # per axis for positions, per factor for covariances


# -------------------------------------------------------------------- encode
def encode(q: QuantisedGaussians) -> tuple[bytes, dict[str, int]]:
    """The bitstream of ``q`` and its size by component: {"header", "positions", "covariances", "colours"} in bits.

    The Gaussians are written in canonical order, so ``decode(data)`` equals ``q.canonical()``.
    """
    q = q.canonical()
    gaps = np.diff(q.cell_index().numpy(), prepend=0)
    rice = _best_rice_bits(gaps, 2 * q.position_bits)
    quotients, remainders = gaps >> rice, gaps & ((1 << rice) - 1)
    alphabet = int(quotients.max()) + 1 if len(q) else 1
    gap_counts = histogram(quotients, alphabet)
    chol_counts = [histogram(c, 2 ** q.cholesky_bits) for c in q.cholesky.numpy().T]
    colour_counts = [histogram(c, q.codebook_size) for c in q.colours.numpy().T]

    position_words = encode_streams([(quotients, gap_counts)]).tobytes()
    cholesky_words = encode_streams(list(zip(q.cholesky.numpy().T, chol_counts))).tobytes()
    colour_words = encode_streams(list(zip(q.colours.numpy().T, colour_counts))).tobytes()

    height, width = q.size
    fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, height, width, len(q), q.position_bits, q.cholesky_bits, q.stages,
                        q.codebook_size, rice, *q.cholesky_low.tolist(), *q.cholesky_high.tolist())
    pieces = [  # (component, bytes), in file order
        ("header", fixed[:-24]),
        ("covariances", fixed[-24:]),
        ("colours", q.codebooks.half().numpy().astype("<f2").tobytes()),
        ("positions", varints([alphabet, *gap_counts])),
        ("covariances", varints(np.concatenate(chol_counts))),
        ("colours", varints(np.concatenate(colour_counts)) if colour_counts else b""),
        ("header", varints([len(position_words), len(cholesky_words), len(colour_words)])),
        ("positions", position_words + pack_bits(remainders, rice)),
        ("covariances", cholesky_words),
        ("colours", colour_words),
    ]
    body = b"".join(p for _, p in pieces)
    data = body + struct.pack("<I", zlib.crc32(body))
    bits = {"header": 32, "positions": 0, "covariances": 0, "colours": 0}
    for component, piece in pieces:
        bits[component] += 8 * len(piece)
    return data, bits


def _best_rice_bits(gaps: np.ndarray, max_bits: int) -> int:
    """The number of low bits k that makes the quotients (range-coded, with their table) + N k raw bits smallest."""
    def cost(k: int) -> float:
        counts = np.bincount(gaps >> k)
        p = counts[counts > 0] / len(gaps)
        return len(gaps) * k - len(gaps) * float((p * np.log2(p)).sum()) + 8 * len(varints([len(counts), *counts]))

    if len(gaps) == 0:
        return 0
    # Fewer low bits than this would make a quotient alphabet (and its table) of over 4096 symbols.
    fewest = max(0, int(gaps.max()).bit_length() - 12)
    return min(range(fewest, max(fewest, max_bits) + 1), key=cost)


# -------------------------------------------------------------------- decode
def decode(data: bytes) -> QuantisedGaussians:
    """The quantised Gaussians stored in ``data`` (bytes of a ``.gic`` file).

    Raises:
        BitstreamError: not a gilab compressed image, a newer version, damaged or truncated data, or
            inconsistent counts; one line.
    """
    data = memoryview(bytes(data))
    header = _read_fixed(data)
    (_, _, height, width, count, position_bits, cholesky_bits, stages, codebook_size, rice, *ranges) = header
    reader = _Reader(data[_FIXED.size:len(data) - 4])
    codebooks = reader.float16((stages, codebook_size, 3), "colour codebooks")
    alphabet = int(reader.varints(1, "position table")[0])
    if alphabet < 1 or alphabet > (4 ** position_bits >> rice) + 1:
        raise BitstreamError(f"malformed position table (an alphabet of {alphabet} gap quotients)")
    gap_counts = reader.counts(alphabet, count, "position table")
    chol_counts = [reader.counts(2 ** cholesky_bits, count, "covariance table") for _ in range(3)]
    colour_counts = [reader.counts(codebook_size, count, "colour table") for _ in range(stages)]
    lengths = reader.varints(3, "section lengths")
    position_words = reader.words(lengths[0], "positions")
    remainders = unpack_bits(reader.take(math.ceil(count * rice / 8), "positions"), count, rice)
    cholesky_words = reader.words(lengths[1], "covariances")
    colour_words = reader.words(lengths[2], "colours")
    if reader.left():
        raise BitstreamError(f"{reader.left()} unexpected bytes after the colours")

    (quotients,) = decode_streams(position_words, [(gap_counts, count)])
    cholesky = decode_streams(cholesky_words, [(c, count) for c in chol_counts])
    colours = decode_streams(colour_words, [(c, count) for c in colour_counts])
    cells = np.cumsum((quotients << rice) | remainders)
    if count and cells[-1] >= 4 ** position_bits:
        raise BitstreamError("damaged positions (a cell outside the grid)")
    side = 2 ** position_bits
    positions = np.stack([cells % side, cells // side], 1).reshape(count, 2)
    as_long = lambda columns, width: torch.from_numpy(np.stack(columns, 1).reshape(count, width).astype(np.int64))
    return QuantisedGaussians(
        (height, width), position_bits, torch.from_numpy(positions.astype(np.int64)), cholesky_bits,
        torch.tensor(ranges[:3], dtype=torch.float32), torch.tensor(ranges[3:], dtype=torch.float32),
        as_long(cholesky, 3), codebooks, as_long(colours, stages))


def _read_fixed(data: memoryview) -> tuple:
    """The fixed-size header, after checking magic, version and checksum (in that order: the most telling
    message first)."""
    if len(data) < len(MAGIC) or bytes(data[:len(MAGIC)]) != MAGIC:
        raise BitstreamError("not a gilab compressed image (no .gic magic bytes at its start)")
    if len(data) < _FIXED.size + 4:
        raise BitstreamError(f"truncated: {len(data)} bytes is shorter than the {_FIXED.size + 4}-byte header")
    version = data[len(MAGIC)]
    if version > FORMAT_VERSION:
        raise BitstreamError(f"format version {version} is newer than this gilab (reads up to {FORMAT_VERSION}); "
                             "upgrade gilab")
    if version < 1:
        raise BitstreamError(f"malformed format version {version}")
    (stored,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != stored:
        raise BitstreamError("damaged or truncated: the checksum does not match the data")
    header = _FIXED.unpack(data[:_FIXED.size])
    _, _, height, width, count, position_bits, cholesky_bits, stages, codebook_size, rice, *ranges = header
    if height < 1 or width < 1:
        raise BitstreamError(f"malformed image size {width}x{height}")
    if not (1 <= position_bits <= MAX_BITS and 1 <= cholesky_bits <= MAX_BITS):
        raise BitstreamError(f"malformed bit depths (positions {position_bits}, covariances {cholesky_bits})")
    if not (1 <= stages <= 8 and 1 <= codebook_size <= 4096 and rice <= 2 * position_bits):
        raise BitstreamError(f"malformed parameters ({stages} colour stages of {codebook_size} codewords, "
                             f"{rice} rice bits)")
    if count > 4 * height * width + 1024:
        raise BitstreamError(f"malformed count: {count} Gaussians for {height}x{width} pixels")
    if not all(math.isfinite(v) for v in ranges):
        raise BitstreamError("malformed covariance ranges (not finite)")
    return header


class _Reader:
    """Reads the variable part of the body front to back; every read checks that the bytes are there."""

    def __init__(self, data: memoryview):
        self.data, self.pos = data, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, where: str) -> bytes:
        if n > self.left():
            raise BitstreamError(f"the file ends inside the {where} (truncated?)")
        self.pos += n
        return bytes(self.data[self.pos - n:self.pos])

    def varints(self, n: int, where: str) -> np.ndarray:
        values, used = read_varints(self.data[self.pos:], n, where)
        self.pos += used
        return values

    def counts(self, alphabet: int, total: int, where: str) -> np.ndarray:
        """A histogram of ``alphabet`` counts that must add up to ``total`` symbols."""
        counts = self.varints(alphabet, where)
        if int(counts.sum()) != total:
            raise BitstreamError(f"malformed {where}: its counts add up to {int(counts.sum())}, not {total}")
        return counts

    def words(self, n: int, where: str) -> np.ndarray:
        if n % 4:
            raise BitstreamError(f"malformed length of the {where} ({n} bytes is not whole 32-bit words)")
        return np.frombuffer(self.take(int(n), where), dtype="<u4").astype(np.uint32)

    def float16(self, shape: tuple[int, ...], where: str) -> torch.Tensor:
        raw = self.take(2 * math.prod(shape), where)
        values = np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(shape)
        if not np.isfinite(values).all():
            raise BitstreamError(f"malformed {where} (not finite)")
        return torch.from_numpy(values.copy())
