"""The net-zoom start (gilab.starts.zoomed_net_start) and benchmarks/codec_start_scale.py."""

from __future__ import annotations

import torch
from conftest import load_benchmark, synthetic_image


def test_zoomed_start_covers_the_full_image_at_the_count_asked():
    from gilab.generator import Generator
    from gilab.starts import ZOOM_FACTORS, make_start, zoomed_net_start

    gen = Generator.from_pretrained().eval()
    image = synthetic_image(128, 192)
    with torch.no_grad():
        own = len(gen(image))
        n = max(60, own // 16)
        g, factor = zoomed_net_start(gen, image, n, own)
        by_kind, _ = make_start("net-zoom", image, n, generator=gen)  # the start kind: the same, own N estimated
    assert factor in ZOOM_FACTORS and factor > 1 and abs(len(g) - n) <= 0.02 * n + 2, (len(g), n, factor)
    assert g.size == (128, 192)
    # zoomed up: the means spread over the whole picture, not over its top-left 1 / factor
    assert g.means[:, 0].max() > 192 * 0.75 and g.means[:, 1].max() > 128 * 0.75
    assert abs(len(by_kind) - n) <= 0.02 * n + 2 and by_kind.size == (128, 192)


def test_missing_images_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("codec_start_scale")
    monkeypatch.setenv("GILAB_DATA", str(tmp_path))
    assert bench.main(["--out", str(tmp_path / "x.json")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_codec_encodes_from_the_zoomed_start():
    from gilab import codec

    image = synthetic_image(128, 192)
    result = codec.compress(image, n=150, init="net-zoom", iters=6)
    assert abs(result.n - 150) <= 5 and result.image.shape == image.shape and result.psnr > 10
