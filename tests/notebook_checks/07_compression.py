# Run in the kernel after notebooks/07_compression.ipynb (fast mode): what it must have achieved.
import itertools
import math

from gilab.codec import CodecSettings

assert abs(len(g) - N) <= 0.05 * N and fitted.psnr > 18, (len(g), fitted.psnr)
# each quantiser alone: the PSNR rises with the bits (up to k-means' and rounding's noise) and never beats float
for part, scores in curves.items():
    assert all(b > a - 0.3 for a, b in itertools.pairwise(scores)), (part, scores)
    assert scores[0] < scores[-1] - 3 and max(scores) <= fitted.psnr + 0.1, (part, scores, fitted.psnr)
assert curves["positions"][-1] > fitted.psnr - 0.1  # 16-bit positions: as good as float
for part, scores in by_part.items():
    assert all(b > a - 0.3 for a, b in itertools.pairwise(scores.values())), (part, scores)
assert by_part["colours"][(2, 64)] > by_part["colours"][(1, 4)] + 2, by_part["colours"]
# the two recipes: real files whose report adds up, decoded to what the notebook shows
for name, f in files.items():
    assert sum(f["bits"].values()) == 8 * len(f["data"]), name
    assert torch.equal(codec.decompress(f["data"]), f["decoded"]), name
    assert f["psnr"] < fitted.psnr + 0.1 and codec.decode(f["data"]).position_bits == recipes[name].position_bits
theirs, ours = files.values()
n = len(g)  # entropy coding: under the raw 2 x 16 bits, near log2(e 2^32 / N) bits each (exercise 1)
assert (31 - math.log2(n)) * n < theirs["bits"]["positions"] < 32 * n, theirs["bits"]
assert ours["bits"]["positions"] < theirs["bits"]["positions"] and ours["psnr"] > theirs["psnr"]
# quantisation-aware fine-tuning beats rounding once, at the same settings
assert qat_psnr > rounded["psnr"], (qat_psnr, rounded["psnr"])
assert codec.decode(qat_data).codebook_size == 8 and sum(qat_bits.values()) == 8 * len(qat_data)
# compress() from both starts: files of N Gaussians within the budget, decoding to the scored images
assert set(starts) == {"net", "random"}
for init, r in starts.items():
    assert abs(r.n - N) <= 0.05 * N and len(codec.decode(r.data)) == r.n, (init, r.n)
    assert r.seconds < BUDGET + 2 and torch.equal(codec.decompress(r.data), r.image), (init, r.seconds)
# the RD table says what the text says: JPEG ahead of gilab at 0.3 bpp, AVIF ahead of both
gilab_03, jpeg_03, avif_03 = (row(target_bpp=0.3, **columns[c]) for c in ("gilab net", "JPEG", "AVIF"))
assert avif_03["psnr"] > jpeg_03["psnr"] > gilab_03["psnr"]
# the widget: the size it reports is its file's, the file decodes to its picture, fewer bits cost quality
assert explorer.settings == CodecSettings(position_bits=8, cholesky_bits=6, stages=2, codebook_size=8)
assert explorer.encodes == 3 and explorer.error is None and len(explorer.image.value) > 500
assert f"{len(explorer.data):,} bytes = {explorer.bpp:.3f} bpp" in explorer.status.value
assert explorer.size_bytes == len(explorer.data) and explorer.bpp == 8 * len(explorer.data) / (H * W)
assert torch.equal(codec.decompress(explorer.data), explorer.decoded)
sizes, scores = [], []
for bits in (6, 4, 2):
    explorer.cholesky_bits.value = bits
    sizes.append(len(explorer.data))
    scores.append(explorer.psnr)
assert sizes[0] > sizes[1] > sizes[2] and scores[0] > scores[2] + 1, (sizes, scores)
# the exercises
assert bits16["positions"] < 32 * len(g) and bad_chol == 0
mine = my_quantise(x, low, high, 4)
assert mine is not None and torch.allclose(mine, UniformQuantiser(low, high, 4)(x), atol=1e-6)
