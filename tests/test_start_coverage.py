"""benchmarks/start_coverage.py: Gaussians per pixel at the start of a fit, the price of one iteration."""

from __future__ import annotations

import torch
from conftest import load_benchmark, synthetic_image


def test_the_network_covers_each_pixel_several_times_more_than_the_random_start():
    from gilab.generator import Generator
    from gilab.starts import make_start

    bench = load_benchmark("start_coverage")
    gen = Generator.from_pretrained().eval()
    image = synthetic_image(96, 128)
    with torch.no_grad():
        net, _ = make_start("net", image, 400, generator=gen)
        rand, _ = make_start("random", image, 400, seed=0)
    net_cover, random_cover = bench.coverage(net, 96, 128), bench.coverage(rand, 96, 128)
    assert net_cover > 3 * random_cover > 0.0, (net_cover, random_cover)


def test_missing_images_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("start_coverage")
    monkeypatch.setenv("GILAB_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert bench.main(["--out", str(tmp_path / "x.json")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
