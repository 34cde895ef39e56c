"""The gilab command line: fit, render, demo; one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from test_fit import smooth_image

from gilab.cli import main


@pytest.fixture
def small_png(tmp_path):
    array = (smooth_image(24, 32).permute(1, 2, 0).numpy() * 255).astype("uint8")
    path = tmp_path / "small.png"
    Image.fromarray(array).save(path)
    return path


def test_fit_writes_everything(tmp_path, small_png, capsys):
    out = tmp_path / "out"
    assert main(["fit", str(small_png), "--n", "80", "--iters", "40", "--out", str(out), "--no-progress",
                 "--backend", "torch"]) == 0
    for name in ["render.png", "gaussians.safetensors", "history.csv", "history.json", "psnr.png", "comparison.png",
                 "summary.json"]:
        assert (out / name).stat().st_size > 0, name
    history = json.loads((out / "history.json").read_text())
    assert len(history["psnr"]) == 41 and history["psnr"][-1] > history["psnr"][0]
    assert "80 Gaussians, 40 iterations" in capsys.readouterr().out

    big = tmp_path / "big.png"
    assert main(["render", str(out / "gaussians.safetensors"), "--scale", "2", "--out", str(big)]) == 0
    assert Image.open(big).size == (64, 48)


@pytest.mark.parametrize("content", [None, b"", b"this is not an image"])
def test_bad_image_is_one_line_exit_2(tmp_path, content, capsys):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    assert main(["fit", str(path), "--iters", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.png" in err and err.startswith("gilab fit: error:")


def test_render_bad_file_is_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    assert main(["render", str(junk), "--out", str(tmp_path / "x.png")]) == 2
    assert "not a gilab Gaussians file" in capsys.readouterr().err


def test_python_dash_m_and_help():
    for args in [["--help"], ["fit", "--help"], ["render", "--help"], ["demo", "--help"]]:
        run = subprocess.run([sys.executable, "-m", "gilab", *args], capture_output=True, text=True, timeout=120,
                             check=False)
        assert run.returncode == 0 and "usage: gilab" in run.stdout


def test_demo_image_ships_with_a_dependency():
    from gilab.io import default_image

    image = default_image()
    assert image.shape[0] == 3 and min(image.shape[1:]) >= 256 and 0 <= image.min() and image.max() <= 1
    assert image.std() > 0.05  # a real photograph, not a placeholder
    assert image.dtype == torch.float32


def test_fit_checkpoint_continues_after_ctrl_c(tmp_path, small_png, capsys, monkeypatch):
    import gilab.cli
    import gilab.fitting

    out, real_advance = tmp_path / "out", gilab.fitting._advance
    monkeypatch.setattr(gilab.cli, "CHECKPOINT_EVERY", 0.0)  # a saved state after every step

    def ctrl_c_at_25(bar, iteration, history, iters):
        real_advance(bar, iteration, history, iters)
        if iteration == 25:
            raise KeyboardInterrupt

    args = ["fit", str(small_png), "--n", "80", "--iters", "40", "--out", str(out), "--no-progress", "--checkpoint"]
    monkeypatch.setattr(gilab.fitting, "_advance", ctrl_c_at_25)
    assert main(args) == 0  # the outputs of the 25 steps are written, and the state is kept
    assert "the same command continues from" in capsys.readouterr().err and (out / "fit.ckpt").exists()
    monkeypatch.setattr(gilab.fitting, "_advance", real_advance)
    assert main(args) == 0
    assert json.loads((out / "history.json").read_text())["iteration"] == list(range(41))
    assert not (out / "fit.ckpt").exists()
