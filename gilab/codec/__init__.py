"""Image compression with 2D Gaussians: GaussianImage's codec, started by Instant GaussianImage's network.

    from gilab import codec
    result = codec.compress(image, bpp=0.3, init="net", seconds=20)   # CompressResult: data, bpp, psnr, ...
    result.save("photo.gic")
    image = codec.decompress("photo.gic", scale=2.0)                    # (3, 2H, 2W) in [0, 1]

One idea per module:

- ``quantisers``  uniform quantisers (positions on a grid, Cholesky factors over their range), straight-through
- ``rvq``         residual vector quantisation of the colours (k-means codebooks, scipy)
- ``finetune``    quantisation-aware fine-tuning: gilab's model seen through the quantisers
- ``quantised``   the quantised Gaussians: level indices and tables, and what they decode to
- ``entropy``     range coding with static histograms (constriction), varints, packed bits
- ``bitstream``   the versioned ``.gic`` file: encode, decode, checks (BitstreamError)
- ``encoder``     compress() and decompress(); quantise() (the quantisers alone, no fine-tuning)
"""

from .bitstream import FORMAT_VERSION, MAGIC, decode, encode
from .encoder import CompressResult, compress, decompress, gaussians_for_rate, quantise
from .errors import BitstreamError
from .finetune import CodecSettings, QuantisedModel, finetune_quantised
from .quantised import QuantisedGaussians

__all__ = ["FORMAT_VERSION", "MAGIC", "BitstreamError", "CodecSettings", "CompressResult", "QuantisedGaussians",
           "QuantisedModel", "compress", "decode", "decompress", "encode", "finetune_quantised",
           "gaussians_for_rate", "quantise"]
