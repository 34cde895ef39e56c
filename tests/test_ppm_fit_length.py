"""benchmarks/ppm_fit_length.py: the PPM-against-fit-length curve on small synthetic images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import load_benchmark, synthetic_image


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("ppm_fit_length")


def test_snapshot_at_k_is_the_fit_of_k_iterations(bench):
    """The curve's map at K is the pseudo-PPM prepare-ppm --iters K would write (one fit gives every K)."""
    from gilab.training.targets import ppm_from_image

    image = synthetic_image(40, 48)
    curve = bench.image_curve(image, [0, 5, 10])
    assert [r["iteration"] for r in curve] == [0, 5, 10]
    assert curve[-1]["mass_moved_vs_last"] == 0 and curve[-1]["correlation_vs_last"] == pytest.approx(1)
    assert curve[0]["mass_moved_vs_quadtree"] == 0
    assert curve[2]["psnr"] > curve[0]["psnr"]  # the fit improves on the quad-tree start
    fitted = ppm_from_image(image, iters=5)
    quadtree = ppm_from_image(image, iters=0)
    last = ppm_from_image(image, iters=10)
    assert bench.mass_moved(fitted, quadtree, bench.BLOCK) == pytest.approx(curve[1]["mass_moved_vs_quadtree"], abs=1e-5)
    assert bench.mass_moved(fitted, last, bench.BLOCK) == pytest.approx(curve[1]["mass_moved_vs_last"], abs=1e-5)


def test_mass_moved_measures_where_the_map_puts_its_weight():
    """generator_ablation.mass_moved (both benchmarks' measure): 0 for the same map, 1 for disjoint ones."""
    m = load_benchmark("generator_ablation")
    left = torch.zeros(16, 16)
    left[:, :8] = 1
    assert m.mass_moved(left, left, 8) == 0
    assert m.mass_moved(left, left.flip(1), 8) == pytest.approx(1)  # disjoint halves
    assert m.mass_moved(left, torch.ones(16, 16), 8) == pytest.approx(0.5)


def test_summary_gives_both_ratios_per_fit_length(bench):
    def curve(to_last, to_start):
        return [{"iteration": k, "psnr": 20 + i, "seconds": float(k), "mass_moved_vs_last": d,
                 "mass_moved_vs_quadtree": q, "correlation_vs_last": 1 - d}
                for i, (k, d, q) in enumerate(zip([0, 10, 100, 1000], to_last, to_start))]

    curves = {"a": curve([0.2, 0.1, 0.01, 0.0], [0.0, 0.1, 0.19, 0.2]),
              "b": curve([0.1, 0.08, 0.02, 0.0], [0.0, 0.09, 0.09, 0.1])}  # b reshuffles: far from the end, not the start
    rows = bench.summarise(curves)["mean"]
    shares = [r["share_of_change"] for r in rows]
    assert shares[0] == 0 and shares[-1] == 1
    assert shares[1] == pytest.approx((0.5 + 0.2) / 2) and shares[2] == pytest.approx((0.95 + 0.8) / 2)
    assert rows[2]["departure"] == pytest.approx((0.95 + 0.9) / 2) and rows[2]["departure_min"] == pytest.approx(0.9)
    assert rows[2]["share_of_change_min"] == pytest.approx(0.8)


def test_main_writes_the_curve_and_resumes(bench, tmp_path, monkeypatch, capsys):
    from PIL import Image

    train = tmp_path / "data" / "train" / "bsds500" / "train"
    train.mkdir(parents=True)
    for i in range(2):
        array = (synthetic_image(32, 40).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(array[:, :: 1 - 2 * i].copy()).save(train / f"{i}.jpg")
    monkeypatch.setenv("GILAB_DATA", str(tmp_path / "data"))
    args = ["--images", "2", "--checkpoints", "4", "8", "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "o.json")]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "o.json").read_text())
    assert result["images"] == ["0.jpg", "1.jpg"] and result["checkpoints"] == [0, 4, 8]
    assert [r["iteration"] for r in result["summary"]["mean"]] == [0, 4, 8]
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 2
    capsys.readouterr()
    assert bench.main(args) == 0  # everything cached: no fit runs, no per-image line
    assert "0.jpg" not in capsys.readouterr().out
    assert bench.main(["--images", "3", *args[2:]]) == 2
    assert bench.main(["--checkpoints", "4", *args[4:]]) == 2
