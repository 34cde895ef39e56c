"""benchmarks/generator_ablation.py: its core end to end on two tiny synthetic images (2 steps per arm)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from conftest import load_benchmark, synthetic_image


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("generator_ablation")


@pytest.fixture
def one_thread():
    """One torch thread, as the script runs: on tiny tensors two threads only wait for each other (3x slower on
    a busy machine)."""
    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])


def tiny_ppm(image: torch.Tensor) -> torch.Tensor:
    """A cheap stand-in pseudo-PPM in [0, 1]: the image's gradient magnitude, smoothed and normalised."""
    grey = image.mean(0)
    gy, gx = torch.gradient(grey)
    g = torch.nn.functional.avg_pool2d((gx.abs() + gy.abs())[None, None], 5, 1, 2)[0, 0]
    return (0.1 + g / g.max()).clamp(0, 1)


def test_ablation_core_end_to_end(bench, tmp_path, one_thread):
    from gilab.generator import Generator

    torch.manual_seed(0)
    shipped = Generator.from_pretrained()
    shipped.net.requires_grad_(False)
    images = [synthetic_image(32, 32), synthetic_image(32, 32).flip(2).contiguous()]
    pairs = [((x * 255).round().to(torch.uint8), tiny_ppm(x).half()) for x in images]
    fitted = [(x, (p.float() ** 1.2).half()) for x, p in pairs]  # a "fitted" target that differs a little
    eval_sets = {"bsds_val": [("tiny0", images[0])], "kodak": [("tiny1", images[1])]}
    settings = {"crop": 32, "crops_per_image": 1, "steps": 2, "batch": 1, "lr": 1e-3, "lr_min": 1e-5,
                "grad_clip": 1.0, "kernel_size": 3, "seed": 0, "backend": "auto", "train_names": ["t0", "t1"],
                "eval_names": {k: [n for n, _ in v] for k, v in eval_sets.items()}, "weights": "test",
                "fit_iters": 1}
    lines = []
    results = bench.run_ablation(shipped, pairs, eval_sets, settings, tmp_path, arms=tuple(bench.ARMS),
                                 fitted_train_pairs=fitted, log=lines.append)
    assert list(results["arms"]) == ["a", "b", "c", "d", "e"]
    assert set(results["references"]) == {"init", "shipped"}
    for name, rec in results["arms"].items():
        assert rec["steps"] == 2 and len(rec["curve"]) == 2 and rec["curve"][0]["n"] > 0
        for set_name in eval_sets:
            mean = rec["scores"][set_name]["mean"]
            assert set(mean) == {"own", "target"}
            assert all(5 < v["psnr"] < 60 and v["n"] > 0 for v in mean.values())
        assert ("delta_vs_init" if name == "a" else "delta_vs_" + chr(ord(name) - 1)) in rec
    # The frozen net's meshes are shared: every arm and reference has the same N on every image.
    ns = {json.dumps({s: {i: {w: v["n"] for w, v in r.items()} for i, r in sc["per_image"].items()}
                      for s, sc in rec["scores"].items()})
          for rec in [*results["arms"].values(), *results["references"].values()]}
    assert len(ns) == 1

    shift = bench.measure_fitted(shipped, [("tiny0", images[0])], [pairs[0][1].float()], [fitted[0][1].float()])
    assert 0 <= shift["mean"]["mass_moved_24px"] <= 1 and shift["mean"]["rec_weight_rel_change"] > 0

    out = bench.assemble(results, shift, settings, time.perf_counter(), (0.0, 0.0, 0.0), "test")
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(out, indent=1))
    back = json.loads(path.read_text())
    assert set(back["arms"]) == set("abcde") and back["settings"]["train_crops"] == 2
    assert back["table_markdown"].count("\n| ") == 1 + 1 + 5 + 1  # separator, init, five arms, shipped

    # A rerun reads every arm from the cache instead of training it again.
    lines.clear()
    again = bench.run_ablation(shipped, pairs, eval_sets, settings, tmp_path, arms=("a", "e"),
                               fitted_train_pairs=fitted, log=lines.append)
    assert sum("cached" in line for line in lines) == 3  # prepared crops, arms a and e
    assert again["arms"]["e"]["scores"] == results["arms"]["e"]["scores"]


def test_scaled_count_and_subsets(bench):
    assert bench.scaled_count(512, 768) == 42_858
    assert bench.scaled_count(321, 481) == 16_829
    assert bench.evenly(list(range(10)), 3) == [0, 3, 6]
    assert len(bench.batches(5, 2, 7, seed=0)) == 7 and all(len(b) == 2 for b in bench.batches(5, 2, 7, seed=0))
