"""The generator: network shapes, count control, weights I/O, gradients, DDP, pseudo-PPM preparation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import load_benchmark

from gilab.errors import ArgumentError
from gilab.generator import Generator, GeneratorConfig
from gilab.generator.generator import WEIGHTS
from gilab.training import TrainConfig

TINY = GeneratorConfig(widths=(8, 16, 16, 16), depths=(1, 1, 1, 1), decoder_widths=(16, 16, 16, 16, 16),
                       feat_dim=16, field_hidden=16)


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def test_shapes_for_odd_sizes():
    torch.manual_seed(0)
    gen = Generator(TINY).eval()
    for h, w in [(37, 53), (64, 64), (33, 100)]:
        image = smooth_image(h, w)
        features, padded, ppm = gen.predict(image[None])
        hp, wp = padded.shape[-2:]
        assert hp % 32 == 0 and wp % 32 == 0 and hp >= h and wp >= w
        assert features.shape == (1, TINY.feat_dim, hp // TINY.out_stride, wp // TINY.out_stride)
        assert ppm.shape == (1, h, w) and 0 <= ppm.min() and ppm.max() <= 1
        timings = {}
        g = gen(image, timings=timings)
        assert g.size == (h, w) and len(g) > 0
        assert set(timings) == {"network", "placement", "fields"}
        m = g.means
        assert (m[:, 0] >= 0).all() and (m[:, 0] <= w).all() and (m[:, 1] >= 0).all() and (m[:, 1] <= h).all()
        assert torch.isfinite(g.conics()).all() and (g.scales > 0).all()


@pytest.mark.parametrize("out_stride", [1, 4])
def test_other_output_strides(out_stride):
    cfg = GeneratorConfig(**{**TINY.to_dict(), "out_stride": out_stride})
    features, _, ppm = Generator(cfg).predict(torch.rand(2, 3, 40, 70))
    assert features.shape == (2, 16, 64 // out_stride, 96 // out_stride) and ppm.shape == (2, 40, 70)


def test_list_grey_and_rgba_inputs():
    from PIL import Image

    gen = Generator(TINY).eval()
    grey = Image.fromarray((np.random.default_rng(0).random((30, 41)) * 255).astype(np.uint8), "L")
    rgba = Image.fromarray((np.random.default_rng(1).random((45, 20, 4)) * 255).astype(np.uint8), "RGBA")
    out = gen([grey, rgba])
    assert isinstance(out, list) and [g.size for g in out] == [(30, 41), (45, 20)]


def test_count_follows_density_and_target():
    gen = Generator(TINY)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 120), torch.linspace(0, 1, 150), indexing="ij")
    ppm = (0.2 + 0.6 * xx * yy).float()
    counts = [len(gen.mesh(ppm, density=d)) for d in (0.5, 1.0, 2.0)]
    assert counts[0] < counts[1] < counts[2]
    assert len(gen.mesh(ppm, kernel_size=5)) < counts[1]
    for target in (500, 1500):
        n = len(gen.mesh(ppm, target_count=target))
        assert abs(n - target) <= 0.03 * target, (n, target)


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    gen = Generator(TINY)
    path = gen.save_pretrained(tmp_path / "g.safetensors", note="test")
    assert b"pickle" not in path.read_bytes()[:16]
    back = Generator.from_pretrained(path)
    assert back.config == TINY and back.metadata["note"] == "test"
    for (k, a), (_, b) in zip(gen.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    image = smooth_image(40, 50)
    torch.testing.assert_close(gen.eval()(image).means, back(image).means)


@pytest.mark.skipif(not WEIGHTS.exists(), reason=f"no shipped weights yet at {WEIGHTS} (train, then export them)")
def test_from_pretrained_loads_offline(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("from_pretrained must not use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    gen = Generator.from_pretrained()
    assert not gen.training
    g = gen(smooth_image(50, 70))
    assert len(g) > 0 and g.size == (50, 70)


def test_missing_weights_is_a_clear_error(tmp_path):
    from gilab.errors import GilabError

    with pytest.raises(GilabError, match="no generator weights"):
        Generator.from_pretrained(tmp_path / "none.safetensors")


@pytest.mark.parametrize("colour_step", [False, True])
def test_gradients_reach_every_parameter_group(colour_step):
    from dataclasses import replace

    from gilab.training import GeneratorLoss, focal_mse

    torch.manual_seed(0)
    config = replace(TINY, colour_step=colour_step)
    gen = Generator(config)
    # Perturb the zero-initialised output layers, so gradients flow through every field's inputs too.
    for head in (gen.fields.bc, gen.fields.sigma, gen.fields.opacity):
        torch.nn.init.normal_(head[-1].weight, std=0.1)
    loss_fn = GeneratorLoss(gen, TrainConfig(model=config, backend="torch"))
    images = torch.stack([smooth_image(64, 64, s) for s in (0, 1)])
    ppm = torch.rand(2, 64, 64)
    losses = loss_fn(images, ppm)
    (losses["rec"] + losses["scale"]).backward()  # the rendering (+ scale) loss alone
    groups = {"encoder": gen.net.encoder, "decoder": gen.net.ups, "to_features": gen.net.to_features,
              "reduce": gen.fields.reduce, "bc": gen.fields.bc, "sigma": gen.fields.sigma,
              "opacity": gen.fields.opacity}
    for name, module in groups.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    # Dithering is not differentiable: the position head learns from L_ppm only.
    assert all(p.grad is None for p in gen.net.position.parameters())
    gen.zero_grad()
    _, _, pred = gen.predict(images)
    focal_mse(pred, ppm).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.net.position.parameters())


def _tiny_dataset(root, n=2, size=64):
    from PIL import Image

    for split in ("train", "val"):
        (root / "data" / split).mkdir(parents=True)
        (root / "ppm" / split).mkdir(parents=True)
        for i in range(n):
            image = smooth_image(size, size, seed=i)
            arr = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / "data" / split / f"im{i}.png")
            ppm = torch.rand(size, size, generator=torch.Generator().manual_seed(i)).numpy().astype(np.float16)
            np.save(root / "ppm" / split / f"im{i}.npy", ppm)


def _tiny_config(tmp_path, **kw) -> TrainConfig:
    base = {"model": TINY, "data": str(tmp_path / "data"), "ppm_dir": str(tmp_path / "ppm"),
            "out": str(tmp_path / "run"), "crop": 32, "batch_size": 1, "epochs": 2, "val_images": 1, "threads": 1,
            "backend": "torch"}
    return TrainConfig(**{**base, **kw})


def test_train_resumes(tmp_path):
    from gilab.training import load_checkpoint, train

    _tiny_dataset(tmp_path)
    cfg = _tiny_config(tmp_path, max_steps=1)
    train(cfg, progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["state"]["step"] == 1
    cfg.max_steps = None
    train(cfg, progress=False)  # picks up at step 1, finishes 2 epochs of 2 images
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["state"]["step"] == 4 and ckpt["state"]["epoch"] == 2
    assert (tmp_path / "run" / "curves.png").exists() and (tmp_path / "run" / "best.pt").exists()
    rows = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum("val_psnr" in r for r in rows) == 2
    from gilab.training import export

    out = export(tmp_path / "run" / "best.pt", tmp_path / "g.safetensors")
    assert Generator.from_pretrained(out).config == TINY
    small = export(tmp_path / "run" / "best.pt", tmp_path / "g8.safetensors", int8=True)
    assert small.stat().st_size < 0.6 * out.stat().st_size and Generator.from_pretrained(small).config == TINY
    stepped = export(tmp_path / "run" / "best.pt", tmp_path / "gs.safetensors", colour_step=True)
    assert Generator.from_pretrained(stepped).config.colour_step and not TINY.colour_step


def test_train_stage_starts_from_given_weights(tmp_path):
    """--init-from: a new stage (fresh optimizer, step 0) whose first weights are the given ones."""
    from gilab.training import load_checkpoint, train

    _tiny_dataset(tmp_path)
    start = Generator(TINY)
    torch.nn.init.constant_(start.fields.bc[-1].bias, 0.25)  # a mark no random init makes
    weights = start.save_pretrained(tmp_path / "start.safetensors")
    cfg = _tiny_config(tmp_path, max_steps=1, lr=1e-12, lr_min=1e-12, init_from=str(weights))
    trained = train(cfg, progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["state"]["step"] == 1
    for name, value in start.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], value, atol=1e-6, rtol=0, msg=name)


DDP_SCRIPT = """
import os, sys, torch
from gilab.training import TrainConfig, train
cfg = TrainConfig.load(sys.argv[1])
model = train(cfg, progress=False)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
torch.save(flat, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


@pytest.mark.slow
def test_ddp_two_cpu_ranks_stay_identical(tmp_path):
    _tiny_dataset(tmp_path)
    cfg = _tiny_config(tmp_path, max_steps=2, val_images=2)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "ddp.py").write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "ddp.py"), str(tmp_path / "cfg.json"), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a, b)
    start = torch.cat([p.detach().flatten() for p in Generator(TINY).parameters()])
    assert not torch.equal(a, start)  # it trained


def test_prepare_ppm_resumes_and_shards(tmp_path):
    from PIL import Image

    from gilab.cli import main
    from gilab.training import prepare_ppm

    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    calls = []

    def compute(image):
        calls.append(1)
        return image.mean(0)

    out = tmp_path / "ppm"
    first = prepare_ppm(images, out, shard=(0, 2), compute=compute, progress=False)
    assert first["done"] == 3 and sorted(p.name for p in out.glob("*.npy")) == ["0.npy", "2.npy", "4.npy"]
    again = prepare_ppm(images, out, compute=compute, progress=False)
    assert again == {**again, "done": 2, "skipped": 3} and len(calls) == 5
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
    ppm = np.load(out / "2.npy")
    assert ppm.dtype == np.float16 and ppm.shape == (12, 16) and np.allclose(ppm, 80 / 255, atol=1e-3)
    # The command line skips everything that is done (no fit is started).
    assert main(["prepare-ppm", str(images), "--out", str(out), "--no-progress"]) == 0
    # Maps of another fit length are never mixed in: the folder records how its maps were made.
    assert main(["prepare-ppm", str(images), "--out", str(out), "--iters", "0", "--no-progress"]) == 2
    (out / "ppm_settings.json").unlink()
    with pytest.raises(ArgumentError, match="no record"):
        prepare_ppm(images, out, compute=compute, progress=False)


def test_train_flags_carry_the_config_fields_help(capsys):
    from gilab.cli import main

    assert main(["train-generator", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--init-from INIT_FROM start from these weights" in text and "per process (default: 4)" in text


def test_train_module_reports_missing_data_in_one_line(tmp_path, monkeypatch, capsys):
    # `python -m gilab.training` is what torchrun launches: it must fail like `gilab train-generator` does.
    env = {k: v for k, v in os.environ.items() if k != "GILAB_DATA"}
    proc = subprocess.run([sys.executable, "-m", "gilab.training", "--max-steps", "1", "--out", str(tmp_path / "run"),
                           "--no-progress"], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("gilab train-generator: error:") and "GILAB_DATA" in err and "\n" not in err


def test_colour_bound_is_the_least_squares_optimum():
    """benchmarks/generator_bound.py: CGLS through the renderer reaches the dense least-squares colours."""
    from dataclasses import replace

    import gilab
    from gilab.metrics import psnr

    bench = load_benchmark("generator_bound")
    torch.manual_seed(0)
    n, h, w = 40, 24, 20
    means = torch.rand(n, 2) * torch.tensor([w, h])
    g = gilab.Gaussians2D.from_scale_rotation(means, 1 + 2 * torch.rand(n, 2), torch.rand(n) * 3,
                                              torch.rand(n, 3), size=(h, w))
    image = smooth_image(h, w)
    got = bench.bounds(g, image, iters=150)
    # The same problem as a dense matrix: column i is Gaussian i drawn with colour 1.
    basis = torch.stack([gilab.render(replace(g[i:i + 1], colors=torch.ones(1, 3)))[0].flatten() for i in range(n)], 1)
    best = torch.linalg.lstsq(basis, image.flatten(1).T).solution                       # (n, 3)
    expected = psnr(gilab.render(replace(g, colors=best)).clamp(0, 1), image)
    assert abs(got["free"] - float(expected)) < 0.05
    assert got["free"] >= got["factor"] - 1e-3 >= got["factor_few"] - 2e-3 >= got["net"] - 3e-3


@pytest.mark.parametrize("ellipse_degrees", [0.0, 1e-3, 45.0, 179.99])
def test_offset_angles_reach_every_orientation_from_every_triangle(ellipse_degrees):
    import math

    from gilab.generator.fields import turned

    theta = torch.full((4001,), math.radians(ellipse_degrees), dtype=torch.float64)
    r = torch.atanh(torch.linspace(-0.9999, 0.9999, 4001, dtype=torch.float64))  # even in the field's output
    reach = torch.remainder(turned(theta, r, "offset"), math.pi)
    # every orientation (angles modulo pi) within 0.2 degrees
    covered = torch.histc(reach, bins=900, min=0, max=math.pi)
    assert (covered > 0).all()
    paper = torch.remainder(turned(theta, r, "sigmoid"), math.pi)
    span = math.degrees(float(paper.max() - paper.min()))
    if ellipse_degrees in (0.0, 1e-3, 179.99):  # the paper's form: an axis-aligned triangle cannot turn
        assert span < 0.1
    else:
        assert span > 60


def test_old_weights_keep_the_papers_angle_and_new_models_turn():
    assert Generator.from_pretrained().config.angle == "offset"  # the shipped weights since stage 6 turn freely
    assert GeneratorConfig().angle == "offset" and GeneratorConfig.from_dict({}).angle == "sigmoid"
    with pytest.raises(ValueError, match="angle must be"):
        GeneratorConfig.from_dict({"angle": "euler"})


def test_init_from_weights_of_another_angle_is_refused(tmp_path):
    from gilab.errors import FileFormatError
    from gilab.training.checkpoints import initial_weights

    path = Generator(GeneratorConfig(**{**TINY.to_dict(), "angle": "sigmoid"})).save_pretrained(tmp_path / "w.safetensors")
    with pytest.raises(FileFormatError, match="angle='sigmoid' \\(asked: 'offset'\\)"):
        initial_weights(path, GeneratorConfig(**{**TINY.to_dict(), "angle": "offset"}))
    assert initial_weights(path, GeneratorConfig(**{**TINY.to_dict(), "angle": "sigmoid"}))


def test_converted_paper_angle_weights_place_size_and_colour_every_gaussian_as_before(tmp_path):
    from gilab.training.checkpoints import initial_weights

    torch.manual_seed(0)
    paper = Generator(GeneratorConfig(**{**TINY.to_dict(), "angle": "sigmoid"})).eval()
    for name in ("bc", "sigma", "opacity"):  # make the weights on the paper's always-zero inputs matter if read
        getattr(paper.fields, name)[0].weight.data[:, -4:-2].normal_(std=3.0)
    paper.fields.sigma[-1].bias.data[2] = 0.7  # a field that turns (a fresh one starts at r = 0)
    path = paper.save_pretrained(tmp_path / "w.safetensors")
    offset_cfg = GeneratorConfig(**{**TINY.to_dict(), "angle": "offset"})
    converted = Generator(offset_cfg).eval()
    converted.load_state_dict(initial_weights(path, offset_cfg, convert_angle=True))
    image = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after = paper(image, colour_step=False), converted(image, colour_step=False)
    assert len(before) == len(after) > 20
    for field in ("means", "colors"):
        torch.testing.assert_close(getattr(after, field), getattr(before, field))
    # the same ellipses (scales), turned by the same r through the other form: angles differ, sizes do not
    eig = [torch.linalg.eigvalsh(g.covariances()) for g in (before, after)]
    torch.testing.assert_close(eig[1], eig[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(before.covariances(), after.covariances(), atol=1e-3)


def test_density_gain_spans_the_range_and_the_loss_weights_are_configurable():
    from gilab.training.losses import density_gain, reconstruction_loss

    torch.manual_seed(0)
    gains = [density_gain(3.0) for _ in range(400)]
    assert 1 / 3 <= min(gains) < 0.4 and 2.6 < max(gains) <= 3.0 and density_gain(1.0) == 1.0
    render, target, ppm = torch.rand(3, 24, 24), torch.rand(3, 24, 24), torch.rand(24, 24)
    mse_only = reconstruction_loss(render, target, ppm, 1.0, 0.0)
    ssim_only = reconstruction_loss(render, target, ppm, 0.0, 1.0)
    paper = reconstruction_loss(render, target, ppm)
    torch.testing.assert_close(paper, 0.7 * mse_only + 0.3 * ssim_only)


def _train_a_few_steps(seed=0, steps=8):
    """A tiny generator trained on 4 fixed 64x64 crops (the notebook 04 demo, smaller): each step's loss and N."""
    import torch.nn.functional as F

    import gilab
    from gilab.training import GeneratorLoss, TrainConfig

    torch.manual_seed(seed)
    tiny = Generator(GeneratorConfig(widths=(16, 32, 48, 64), depths=(1, 1, 1, 1), decoder_widths=(48, 32, 32, 24, 16),
                                     feat_dim=32, field_hidden=64))  # notebook 04's; TINY is too small to show it
    loss_fn = GeneratorLoss(tiny, TrainConfig(model=tiny.config))
    source = F.interpolate(gilab.io.default_image()[None], size=(150, 128), mode="area")[0]
    ppm = gilab.training.ppm_from_image(source, iters=0)
    corners = [(10, 20), (40, 50), (80, 5), (86, 60)]
    crops = torch.stack([source[:, y:y + 64, x:x + 64] for y, x in corners])
    crop_ppms = torch.stack([ppm[y:y + 64, x:x + 64] for y, x in corners])
    optimizer, trace = torch.optim.Adam(tiny.parameters(), lr=2e-3), []
    for _ in range(steps):
        losses = loss_fn(crops, crop_ppms)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        trace.append((losses["loss"].item(), losses["n"].item()))
    return trace


def test_training_is_reproducible_from_its_seed():
    # PyTorch's default CPU backward of a gather adds from several threads in no fixed order; dithering turns the
    # last-bit differences into another N. Under gilab.training.deterministic() the same seed gives the same run.
    from gilab.training import deterministic

    before = torch.are_deterministic_algorithms_enabled()
    with deterministic():
        assert torch.are_deterministic_algorithms_enabled()
        first, second = _train_a_few_steps(), _train_a_few_steps()
    assert torch.are_deterministic_algorithms_enabled() == before  # restored
    assert first == second


def test_train_runs_with_deterministic_algorithms(tmp_path, monkeypatch):
    from gilab.training import losses, train

    real, seen = losses.GeneratorLoss.forward, []

    def spy(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(losses.GeneratorLoss, "forward", spy)
    _tiny_dataset(tmp_path)
    train(_tiny_config(tmp_path, max_steps=1), progress=False)
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()


def test_generator_val_compares_weights_on_held_out_images(tmp_path, monkeypatch):
    """benchmarks/generator_val.py: the images after --skip, paired against the first weights; a short set is exit 2."""
    from PIL import Image

    bench = load_benchmark("generator_val")
    val = tmp_path / "data" / "train" / "bsds500" / "val"
    val.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(val / f"{i}.jpg")
    monkeypatch.setenv("GILAB_DATA", str(tmp_path / "data"))
    torch.manual_seed(0)
    paths = [Generator(TINY).save_pretrained(tmp_path / f"w{i}.safetensors") for i in range(2)]
    out = tmp_path / "val.json"
    assert bench.main(["--weights", *map(str, paths), "--skip", "1", "--count", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == ["1.jpg", "2.jpg", "3.jpg"]
    first, second = (result["summary"][str(p)]["own"] for p in paths)
    assert first["psnr_fields_minus_first"] == 0 and first["psnr_colour_step_images_better"] == 0
    row = result["per_image"][0]
    assert second["psnr_fields_minus_first"] != 0 and row[str(paths[1])]["own"]["n"] > 0
    scaled = [row[str(p)]["scaled"]["n"] for p in paths]  # 42,858 x 40 x 56 / (768 x 512) = 244, +-3 %
    assert all(abs(n - 244) <= 8 for n in scaled), scaled
    assert bench.main(["--weights", str(paths[0]), "--skip", "2", "--count", "3", "--out", str(out)]) == 2
