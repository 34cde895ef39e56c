"""Entropy coding of integer symbols with static histograms, by constriction's range coder.

Each stream of symbols in [0, A) is coded with the categorical model of its own histogram; the histogram travels in
the bitstream (as varints), so the decoder rebuilds exactly the same model. constriction (Bamler, 2022; Rust with
Python bindings, maintained, on PyPI with wheels) gives near-optimal range coding: a stream costs its empirical
entropy plus a few bytes. We never write our own arithmetic coder.

    words = encode_streams([(symbols, counts), ...])        # np.uint32 array
    symbols = decode_streams(words, [(counts, length), ...])
    data, rest = varints(counts); counts, rest = read_varints(rest, n)
"""

from __future__ import annotations

import numpy as np

from .errors import BitstreamError


def histogram(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    """(alphabet,) int64 counts of ``symbols`` (any shape, values in [0, alphabet))."""
    return np.bincount(np.asarray(symbols, dtype=np.int64).ravel(), minlength=alphabet).astype(np.int64)


def _model(counts: np.ndarray):
    import constriction

    # perfect=False: the fast construction; encoder and decoder both use it, so the models agree bit for bit.
    # constriction needs at least two symbols; a one-symbol alphabet gets an unused second one.
    probabilities = np.asarray(counts, dtype=np.float64)
    if len(probabilities) < 2:
        probabilities = np.append(probabilities, 0.0)
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def encode_streams(streams: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Range-code every ``(symbols, counts)`` pair in order, each with its histogram's model.

    Args:
        streams: symbols (M,) ints in [0, len(counts)), counts (A,) their histogram (what the decoder gets).

    Returns:
        (W,) np.uint32 compressed words (4 W bytes).
    """
    import constriction

    encoder = constriction.stream.queue.RangeEncoder()
    for symbols, counts in streams:
        if len(symbols) and (counts > 0).sum() > 1:  # a stream of one repeated symbol costs nothing
            encoder.encode(np.asarray(symbols, dtype=np.int32), _model(counts))
    return encoder.get_compressed()


def decode_streams(words: np.ndarray, streams: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
    """Inverse of :func:`encode_streams`: ``streams`` is [(counts, number of symbols), ...] in the same order.

    Returns a list of (M,) int64 arrays. Raises BitstreamError if the words cannot hold those symbols.
    """
    import constriction

    decoder = constriction.stream.queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))
    out = []
    for counts, length in streams:
        present = np.flatnonzero(counts)
        if length == 0 or len(present) <= 1:
            out.append(np.full(length, present[0] if len(present) else 0, dtype=np.int64))
            continue
        try:
            out.append(decoder.decode(_model(counts), length).astype(np.int64))
        except Exception as exc:  # noqa: BLE001 (constriction reports exhausted or invalid data as it likes)
            raise BitstreamError(f"the entropy-coded data are damaged ({' '.join(str(exc).split())})") from None
    return out


# ------------------------------------------------------------------ varints
def varints(values) -> bytes:
    """Unsigned LEB128: 7 bits per byte, high bit set on all but the last byte; small counts take one byte."""
    out = bytearray()
    for value in np.asarray(values, dtype=np.int64).ravel().tolist():
        if value < 0:
            raise ValueError(f"varints are unsigned, got {value}")
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out)


def read_varints(data: memoryview | bytes, count: int, where: str) -> tuple[np.ndarray, int]:
    """(count,) int64 values read from the start of ``data``, and the number of bytes they took."""
    values, pos = [], 0
    for _ in range(count):
        value, shift = 0, 0
        while True:
            if pos >= len(data):
                raise BitstreamError(f"the file ends inside the {where} (truncated?)")
            if shift > 56:
                raise BitstreamError(f"malformed number in the {where}")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        values.append(value)
    return np.array(values, dtype=np.int64), pos


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """The low ``bits`` bits of each of ``values`` (M,), packed most significant first: M bits / 8 bytes.
    For bits that are close to uniformly random, an entropy coder would save nothing."""
    if bits == 0 or len(values) == 0:
        return b""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    planes = (np.asarray(values, dtype=np.int64)[:, None] >> shifts) & 1
    return np.packbits(planes.astype(np.uint8).ravel()).tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (count,) int64."""
    if bits == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits].reshape(count, bits)
    return (planes.astype(np.int64) << np.arange(bits - 1, -1, -1, dtype=np.int64)).sum(1)
