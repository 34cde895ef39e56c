"""benchmarks/codec_start_scale.py: the generator on a downscaled image, its Gaussians zoomed back up."""

from __future__ import annotations

import torch
from conftest import load_benchmark, synthetic_image


def test_zoomed_start_covers_the_full_image_at_the_count_asked():
    bench = load_benchmark("codec_start_scale")
    from gilab.generator import Generator

    gen = Generator.from_pretrained().eval()
    image = synthetic_image(128, 192)
    with torch.no_grad():
        own = len(gen(image))
        n = max(60, own // 16)
        g, factor = bench.zoomed_start(gen, image, n, own)
    assert factor in bench.FACTORS and abs(len(g) - n) <= 0.02 * n + 2, (len(g), n, factor)
    assert g.size == (128, 192)
    # zoomed up: the means spread over the whole picture, not over its top-left 1 / factor
    assert g.means[:, 0].max() > 192 * 0.75 and g.means[:, 1].max() > 128 * 0.75


def test_missing_images_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("codec_start_scale")
    monkeypatch.setenv("GILAB_DATA", str(tmp_path))
    assert bench.main(["--out", str(tmp_path / "x.json")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
