"""gilab.codec: exact round trips, honest bit counts, one-line errors for bad files, the CLI."""

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import load_benchmark, synthetic_image
from PIL import Image
from test_fit import smooth_image

import gilab
from gilab import codec
from gilab.cli import main
from gilab.codec import BitstreamError, CodecSettings, QuantisedGaussians, QuantisedModel
from gilab.codec.entropy import decode_streams, encode_streams, histogram, pack_bits, unpack_bits
from gilab.codec.quantisers import UniformQuantiser, canonical_cholesky, position_quantiser
from gilab.codec.rvq import codeword_sum, fit_codebooks, nearest_codewords
from gilab.errors import ArgumentError, FileFormatError, GilabError
from gilab.io import load_image


def random_quantised(n=300, size=(40, 56), position_bits=9, cholesky_bits=5, stages=2, codebook=8, seed=0):
    """Random level indices and tables, duplicate cells included (the bitstream must not care)."""
    gen = torch.Generator().manual_seed(seed)
    positions = torch.randint(0, 2 ** position_bits, (n, 2), generator=gen)
    positions[: n // 10] = positions[:1]  # many Gaussians in one cell: gaps of zero
    cholesky = torch.randint(0, 2 ** cholesky_bits, (n, 3), generator=gen)
    cholesky[:, 1] = 3  # a stream of one repeated symbol
    codebooks = torch.randn(stages, codebook, 3, generator=gen).half().float()
    colours = torch.randint(0, codebook, (n, stages), generator=gen)
    return QuantisedGaussians(size, position_bits, positions, cholesky_bits, torch.tensor([0.3, -2.0, 0.3]),
                              torch.tensor([6.0, 2.5, 7.0]), cholesky, codebooks, colours)


@pytest.fixture(scope="module")
def compressed():
    """A real compression of a small image (random start, so no network), shared by several tests."""
    image = smooth_image(40, 48)
    return image, codec.compress(image, n=60, iters=200, init="random", backend="torch")


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("n, position_bits, stages", [(300, 9, 2), (1, 16, 1), (0, 4, 3), (2000, 3, 2)])
def test_encode_decode_gives_exactly_the_quantised_gaussians(n, position_bits, stages):
    q = random_quantised(n, position_bits=position_bits, stages=stages)
    data, bits = codec.encode(q)
    back = codec.decode(data)
    assert back.equals(q.canonical())
    assert not back.equals(random_quantised(n, position_bits=position_bits, stages=stages, seed=1).canonical()) or n == 0
    a, b = back.to_gaussians(), q.canonical().to_gaussians()
    for name in ("means", "cholesky", "colors", "opacities"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert sum(bits.values()) == 8 * len(data)


def test_canonical_order_is_a_permutation_and_renders_the_same():
    q = random_quantised(200)
    c = q.canonical()
    assert (c.cell_index().diff() >= 0).all()
    assert sorted(map(tuple, q.positions.tolist())) == sorted(map(tuple, c.positions.tolist()))
    before, after = q.to_gaussians(), c.to_gaussians()
    assert torch.allclose(gilab.render(before, backend="torch"), gilab.render(after, backend="torch"), atol=1e-5)


def test_compressed_bitstream_decodes_to_the_scored_image(compressed):
    image, result = compressed
    q = codec.decode(result.data)
    assert len(q) == result.n == 60
    assert torch.equal(codec.decompress(result.data, backend="torch"), result.image)
    assert result.psnr > 20 and 0 < result.ms_ssim <= 1 and result.seconds > 0
    mean_colour = image.mean((1, 2), keepdim=True).expand_as(image)
    assert result.psnr > float(gilab.metrics.psnr(mean_colour, image)) + 3  # it learned the picture


def test_the_report_counts_exactly_the_bits_in_the_file(compressed, tmp_path):
    _image, result = compressed
    path = result.save(tmp_path / "x.gic")
    assert path.stat().st_size == len(result.data)
    assert sum(result.bits.values()) == 8 * len(result.data) == round(result.bpp * 40 * 48)
    assert set(result.bits) == {"header", "positions", "covariances", "colours"}
    assert all(v > 0 for v in result.bits.values())


def test_entropy_coding_beats_raw_bits_on_skewed_symbols():
    gen = np.random.default_rng(0)
    symbols = np.minimum(gen.geometric(0.5, 5000) - 1, 63)  # entropy about 2 bits, raw 6 bits
    counts = histogram(symbols, 64)
    words = encode_streams([(symbols, counts)])
    assert 4 * len(words) * 8 < 2.1 * len(symbols)
    (back,) = decode_streams(words, [(counts, len(symbols))])
    assert np.array_equal(back, symbols)
    values = gen.integers(0, 2 ** 11, 101)
    assert np.array_equal(unpack_bits(pack_bits(values, 11), 101, 11), values)


# ------------------------------------------------------------------ quantisers
def test_uniform_quantiser_levels_and_straight_through_gradient():
    x = torch.tensor([[0.0, 1.0], [0.26, 1.9], [1.0, 3.0], [5.0, -1.0]], requires_grad=True)
    q = UniformQuantiser(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 3.0]), bits=2)
    assert torch.allclose(q.values(q.indices(x)), torch.tensor([[0.0, 1.0], [1 / 3, 2 - 1 / 3], [1.0, 3.0],
                                                                 [1.0, 1.0]]))
    q(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # rounding passes the gradient straight through


def test_position_grid_covers_the_canvas_at_cell_centres():
    q = position_quantiser(4, 8, bits=2)  # cells of 2 x 1 px
    means = torch.tensor([[0.1, 0.1], [7.9, 3.9], [3.0, 2.2]])
    assert torch.allclose(q.values(q.indices(means)), torch.tensor([[1.0, 0.5], [7.0, 3.5], [3.0, 2.5]]))


def test_canonical_cholesky_keeps_the_covariance():
    chol = torch.tensor([[-1.5, 0.7, -2.0], [2.0, -0.3, 1.0]])
    g = gilab.Gaussians2D.from_cholesky(torch.zeros(2, 2), chol, torch.zeros(2, 3))
    h = gilab.Gaussians2D.from_cholesky(torch.zeros(2, 2), canonical_cholesky(chol), torch.zeros(2, 3))
    assert torch.allclose(g.covariances(), h.covariances())
    assert (canonical_cholesky(chol)[:, [0, 2]] >= 0).all()


def test_rvq_second_stage_reduces_the_error():
    colors = torch.rand(500, 3, generator=torch.Generator().manual_seed(0))
    books = fit_codebooks(colors, stages=2, size=8)
    assert books.shape == (2, 8, 3) and torch.equal(books, books.half().float())
    one = (codeword_sum(nearest_codewords(colors, books[:1]), books[:1]) - colors).square().mean()
    two = (codeword_sum(nearest_codewords(colors, books), books) - colors).square().mean()
    assert two < 0.6 * one
    few = fit_codebooks(torch.tensor([[0.2, 0.3, 0.4]] * 5), stages=1, size=8)  # fewer colours than codewords
    assert torch.allclose(few[0], torch.tensor([0.2, 0.3, 0.4]).half().float().expand(8, 3))


def test_quantised_model_renders_its_own_quantised_gaussians():
    start = gilab.random_gaussians(50, 24, 32)
    model = QuantisedModel(start, 24, 32, CodecSettings(position_bits=6, cholesky_bits=4, stages=2, codebook_size=4))
    g = model.gaussians()
    g.means.sum().backward()
    assert model.xyz.grad.abs().sum() > 0  # straight through the position grid
    q = model.quantised()
    decoded = q.to_gaussians()
    order = torch.from_numpy(np.lexsort([decoded.means[:, 0].numpy(), decoded.means[:, 1].numpy()]))
    mine = torch.from_numpy(np.lexsort([g.means[:, 0].detach().numpy(), g.means[:, 1].detach().numpy()]))
    assert torch.allclose(decoded.means[order], g.means.detach()[mine])


def _quantised_loss(model, image):
    decoded = model.quantised().to_gaussians()
    return float(torch.mean((gilab.render(decoded, backend="torch").clamp(0, 1) - image) ** 2))


@pytest.mark.parametrize("lr, must_improve", [(1.0, False), (1e-3, True)])
def test_quantisation_aware_tuning_never_ends_worse_than_rounding_once(lr, must_improve):
    """The run keeps its best quantised state: even a reckless rate cannot leave a worse file than rounding the
    fit once, and the default rate improves on it."""
    image = smooth_image(24, 32)
    fitted = gilab.fit(image, n=40, iters=150, lr=1e-2, backend="torch", progress=False, seed=0).gaussians
    settings = CodecSettings(position_bits=6, cholesky_bits=3, stages=1, codebook_size=4)
    rounded = _quantised_loss(QuantisedModel(fitted, 24, 32, settings), image)
    model = QuantisedModel(fitted, 24, 32, settings)
    assert codec.finetune_quantised(model, image, iters=40, lr=lr, backend="torch") == 40
    tuned = _quantised_loss(model, image)
    assert tuned <= rounded * (1 + 1e-4)
    if must_improve:
        assert tuned < 0.95 * rounded


# ------------------------------------------------------------------ bad files
def one_line_error(data) -> str:
    with pytest.raises(BitstreamError) as info:
        codec.decode(data)
    message = str(info.value)
    assert "\n" not in message and message
    assert isinstance(info.value, FileFormatError) and isinstance(info.value, GilabError)
    return message


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_damaged_truncated_and_foreign_files_are_one_line_errors(compressed):
    data = compressed[1].data
    for position in (6, len(data) // 2, len(data) - 6):
        damaged = bytearray(data)
        damaged[position] ^= 0x10
        assert "damaged" in one_line_error(bytes(damaged))
    for length in (0, 3, 20, len(data) // 2, len(data) - 1):
        message = one_line_error(data[:length])
        assert "truncated" in message or "magic" in message
    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    for foreign in (png, b"GIC1 hello", bytes(range(256)) * 4):
        assert "not a gilab compressed image" in one_line_error(foreign)


def test_newer_version_and_inconsistent_counts_with_a_valid_checksum(compressed):
    body = bytearray(compressed[1].data[:-4])
    newer = body.copy()
    newer[4] = 9
    assert "newer than this gilab" in one_line_error(with_crc(bytes(newer)))
    more = body.copy()
    struct.pack_into("<I", more, 13, 61)  # the count says 61 Gaussians, the tables hold 60
    message = one_line_error(with_crc(bytes(more)))
    assert "malformed" in message
    assert "unexpected bytes" in one_line_error(with_crc(bytes(body) + b"\x00"))


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("kwargs", [{"bpp": 0.5, "n": 10}, {}, {"bpp": -1.0}, {"n": 0}, {"n": 5, "init": "quadtree"},
                                    {"n": 5, "settings": CodecSettings(position_bits=17)},
                                    {"n": 5, "seconds": 1.0, "iters": 3}, {"bpp": float("nan")},
                                    {"n": 5, "qat_lr": 0.0}])
def test_bad_options_are_refused_before_any_work(kwargs):
    with pytest.raises(ArgumentError) as info:
        codec.compress(smooth_image(24, 32), **kwargs)
    assert "\n" not in str(info.value)


def test_rate_estimate_grows_with_the_rate():
    settings = CodecSettings()
    counts = [codec.gaussians_for_rate(bpp, 512, 768, settings) for bpp in (0.05, 0.2, 0.5, 1.0)]
    assert counts == sorted(counts) and counts[0] < counts[-1] / 10
    assert codec.gaussians_for_rate(1e-6, 512, 768, settings) == 1


# ------------------------------------------------------------------ CLI
@pytest.fixture
def small_png(tmp_path):
    array = (smooth_image(40, 48).permute(1, 2, 0).numpy() * 255).astype("uint8")
    path = tmp_path / "small.png"
    Image.fromarray(array).save(path)
    return path


def test_cli_round_trip(tmp_path, small_png, capsys):
    out = tmp_path / "small.gic"
    assert main(["compress", str(small_png), "--n", "50", "--iters", "30", "--init", "random", "--bits", "10", "5",
                 "--rvq", "2", "4", "--backend", "torch", "-o", str(out)]) == 0
    report = capsys.readouterr().out
    assert f"{out.stat().st_size:,} bytes" in report and "bpp" in report and "MS-SSIM" in report
    png = tmp_path / "big.png"
    assert main(["decompress", str(out), "-o", str(png), "--scale", "2", "--backend", "torch"]) == 0
    assert Image.open(png).size == (96, 80)
    q = codec.decode(out.read_bytes())
    assert (q.position_bits, q.cholesky_bits, q.stages, q.codebook_size, len(q)) == (10, 5, 2, 4, 50)


@pytest.mark.parametrize("args, says", [
    (["decompress", "{junk}", "-o", "{tmp}/x.png"], "not a gilab compressed image"),
    (["decompress", "{tmp}/missing.gic", "-o", "{tmp}/x.png"], "no such file"),
    (["compress", "{png}", "--bpp", "-1"], "bpp must be a positive"),
    (["compress", "{png}", "--bpp", "0.5", "--n", "10"], "not both"),
    (["compress", "{png}", "--n", "10", "--bits", "20", "6"], "position_bits"),
    (["compress", "{png}", "--n", "10", "-o", "{tmp}"], "is a folder"),
    (["compress", "{tmp}/missing.png"], "no such file"),
])
def test_cli_mistakes_are_one_line_exit_2(tmp_path, small_png, capsys, args, says):
    junk = tmp_path / "junk.gic"
    junk.write_bytes(b"junk data")
    args = [a.format(junk=junk, tmp=tmp_path, png=small_png) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and says in err and err.startswith(f"gilab {args[0]}: error:")


# ------------------------------------------------------------------ benchmarks/codec_iterations.py
def test_codec_iterations_brackets_gilab_with_jpeg_and_counts_wins(tmp_path):
    """The fixed-iteration study's summary: JPEG's two files bracket gilab's rate, and a win is counted only where
    gilab's PSNR is above JPEG's."""
    bench = load_benchmark("codec_iterations")
    paths = {}
    for k, size in enumerate([(96, 128), (128, 96)]):
        paths[f"img{k}"] = tmp_path / f"img{k}.png"
        pixels = (synthetic_image(*size) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(paths[f"img{k}"])
    rate = 8 * len(load_benchmark("codec").pillow_encode(load_image(paths["img0"]), "JPEG", 40)[0]) / (96 * 128)
    bracket = bench.jpeg_bracket(paths["img0"], rate)
    assert bracket["below"]["bpp"] <= rate < bracket["above"]["bpp"]
    assert bracket["above"]["quality"] == bracket["below"]["quality"] + 1
    cache = tmp_path / "cache"
    cache.mkdir()
    record = {"iters": 10, "target_bpp": rate, "n": 5, "bpp": rate, "ms_ssim": 0.5, "psnr_before_quantisation": 30.0,
              "encode_s": 1.0, "iterations": [7, 3], "load_average": 0.0}
    lines = [{**record, "image": "img0", "psnr": 99.0}, {**record, "image": "img1", "psnr": 1.0}]
    (cache / "iters_10.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = bench.summarise(cache, paths)
    row = rows["iters_10"]
    assert row["images"] == 2 and row["gilab"]["psnr"] == 50.0
    assert row["gilab_wins_in_psnr_over_jpeg_below"] == 1 and row["gilab_wins_in_psnr_over_jpeg_above"] == 1
    assert row["gilab_wins_in_psnr_at_equal_rate"] == 1
    low, high = bracket["below"], bracket["above"]
    middle = 0.5 * (low["bpp"] + high["bpp"])
    assert bench.jpeg_at(bracket, middle, "psnr") == pytest.approx(0.5 * (low["psnr"] + high["psnr"]))
    assert bench.jpeg_at(bracket, low["bpp"] - 0.01, "psnr") == low["psnr"]  # JPEG cannot go lower: its own file
    assert "| 10 | 2 |" in bench.table(rows)


def test_rd_study_targets_check_each_start_against_jpeg():
    """benchmarks/codec.py's targets: each start at the longest budget against JPEG's matched point and sweep (mean
    and per image), and net at the shortest budget against random at the longest."""
    bench = load_benchmark("codec")
    rows = []
    for image, lift in (("a", 1.0), ("b", -0.5)):
        rows += [{"image": image, "codec": "JPEG", "kind": "sweep", "quality": q, "bpp": b, "psnr": p, "ms_ssim": 0.9,
                  "encode_s": 0.0, "decode_s": 0.0} for q, b, p in ((10, 0.1, 22.0), (20, 0.2, 25.0))]
        rows.append({"image": image, "codec": "JPEG", "kind": "matched", "target_bpp": 0.15, "bpp": 0.14, "psnr": 23.2,
                     "ms_ssim": 0.9, "encode_s": 0.0, "decode_s": 0.0})
        for init, budget, psnr in (("net", 2.5, 20.0), ("net", 12.5, 22.0), ("random", 2.5, 15.0),
                                   ("random", 12.5, 23.5 + lift)):
            rows.append({"image": image, "codec": "gilab", "init": init, "budget_s": budget, "target_bpp": 0.15,
                         "n": 10, "bpp": 0.15, "psnr": psnr, "ms_ssim": 0.8, "encode_s": budget, "decode_s": 0.0,
                         "psnr_before_quantisation": psnr})
    records = [{"image": i, "rows": [{k: v for k, v in r.items() if k != "image"} for r in rows if r["image"] == i]}
               for i in ("a", "b")]
    summary = bench.summarise(records, [0.15], [2.5, 12.5])
    jpeg = {t["init"]: t for t in summary["targets"]["beat_jpeg_at_0.3bpp"]}
    assert jpeg["random"]["jpeg_curve_psnr_at_gilab_bpp"] == pytest.approx(23.5)  # the sweep at 0.15 bpp
    assert jpeg["random"]["gilab_psnr"] == pytest.approx(23.75) and jpeg["random"]["met"]
    assert jpeg["random"]["images_ahead_of_own_jpeg_curve"] == 1 and jpeg["random"]["images"] == 2
    assert not jpeg["net"]["met"] and jpeg["net"]["margin_db"] == pytest.approx(22.0 - 23.5)
    five = summary["targets"]["net_5x_faster"][0]
    assert five["margin_db"] == pytest.approx(20.0 - 23.75) and not five["met_on_the_mean"]
    assert five["images_where_net_short_matches_random_long"] == 0 and five["images"] == 2
