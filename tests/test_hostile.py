"""Hostile inputs: every bad image, tensor, option, file and interruption gets its exact, safe outcome.

Each CLI case asserts one line on stderr that starts ``gilab <command>: error:`` and exit status 2, with no
output written; each API case asserts the error type (a GilabError, and the built-in type callers expect) or
a valid result whose values are checked. The cases are those of the reliability issue and of ``gilab.io``'s
docstring.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_fit import smooth_image

import gilab
from gilab import datasets
from gilab.cli import main
from gilab.errors import ArgumentError, BackendError, DataError, FileFormatError, GilabError, ImageError, NonFiniteError

CUDA = torch.cuda.is_available()
#: What a loader that can run a file's code looks like in source (the probes below spell it without matching it).
UNPICKLING = re.compile(r"allow_pickle\s*=\s*True|pickle\.loads?\(|weights_only\s*=\s*False")
LET_NUMPY_PICKLE = {"allow_" "pickle": True}  # only to write a hostile file for the test


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def png(tmp_path) -> Path:
    path = tmp_path / "small.png"
    Image.fromarray((smooth_image(24, 32).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
    return path


@pytest.fixture
def gaussians_file(tmp_path) -> Path:
    return gilab.random_gaussians(20, 24, 32, seed=1).save(tmp_path / "g.safetensors")


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"gilab {command}: error:"), err
    return err


class Marker:
    """Unpickling this object touches a file: proof that a loader ran code from the file it read."""

    path = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture
def crafted_pickle(tmp_path) -> tuple[Path, Path]:
    """(a .pt file that runs code when unpickled, the file that code would create)."""
    marker = tmp_path / "code-ran"
    Marker.path = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"model": Marker(), "optimizer": {}, "scheduler": {}, "state": {}, "config": {}, "rng": Marker()}, path)
    return path, marker


# ------------------------------------------------------------------------------------------------ 1. pickle
def test_no_loader_in_the_package_can_unpickle():
    """Every torch.load in gilab passes weights_only=True, and nothing unpickles or lets numpy unpickle."""
    root = Path(gilab.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
        assert not UNPICKLING.search(text), path


def test_crafted_pickle_runs_nowhere(crafted_pickle, tmp_path, capsys):
    from gilab.generator import Generator
    from gilab.training import export, load_checkpoint
    from gilab.training.checkpoints import initial_weights

    path, marker = crafted_pickle
    for load in (load_checkpoint, initial_weights, lambda p: export(p, tmp_path / "w.safetensors")):
        with pytest.raises(FileFormatError, match="never unpickles"):
            load(path)
    with pytest.raises(GilabError):
        Generator.from_pretrained(path)
    with pytest.raises(FileFormatError):
        gilab.Gaussians2D.load(path)
    assert main(["train-generator", "--export", str(path), "--to", str(tmp_path / "w.safetensors")]) == 2
    assert "never unpickles" in one_line_error(capsys, "train-generator")
    # the resume path: <out>/last.pt is read by the same loader before any training step
    assert not marker.exists() and not (tmp_path / "w.safetensors").exists()


def test_pickled_npy_is_refused(tmp_path):
    from gilab.training import load_ppm

    np.save(tmp_path / "x.npy", np.array([Marker()], dtype=object), **LET_NUMPY_PICKLE)  # the hostile file
    with pytest.raises(FileFormatError, match="not a readable pseudo-PPM"):
        load_ppm(tmp_path, Path("x.jpg"))


def test_truncated_checkpoint_and_npy(tmp_path, capsys):
    from gilab.training import load_checkpoint, load_ppm

    good = tmp_path / "ok.pt"
    torch.save({"model": {"w": torch.ones(3)}}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(FileFormatError, match="damaged or truncated"):
        load_checkpoint(cut)
    with pytest.raises(FileFormatError, match="missing optimizer"):
        load_checkpoint(good)
    assert main(["train-generator", "--export", str(cut), "--to", str(tmp_path / "w.safetensors")]) == 2
    one_line_error(capsys, "train-generator")
    np.save(tmp_path / "p.npy", np.zeros((12, 16), np.float16))
    (tmp_path / "p.npy").write_bytes((tmp_path / "p.npy").read_bytes()[:150])
    with pytest.raises(FileFormatError):
        load_ppm(tmp_path, Path("p.png"))


# ------------------------------------------------------------------------------------------------ 2. NaN
def test_nan_learning_rate_is_refused_before_work(png, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fit", str(png), "--lr", "nan", "--iters", "5", "--out", str(out), "--no-progress"]) == 2
    assert "lr must be a positive finite number" in one_line_error(capsys, "fit")
    assert not out.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_image_with_a_non_finite_pixel(bad):
    image = smooth_image()
    image[1, 3, 4] = bad
    with pytest.raises(ImageError, match="1 pixel value"):
        gilab.fit(image, n=5, iters=1, progress=False)
    from gilab.generator import Generator

    with pytest.raises(ImageError):
        Generator.from_pretrained()(image)


def test_divergence_rolls_back_to_the_last_finite_step():
    image = smooth_image()

    def poison(state):
        if state.iteration == 5:
            with torch.no_grad():
                state.model.colors[0, 0] = float("nan")

    with pytest.warns(UserWarning, match="diverged"):
        result = gilab.fit(image, n=30, iters=20, callback=poison, callback_every=1, progress=False)
    clean = gilab.fit(image, n=30, iters=4, progress=False)
    assert result.diverged and result.iterations == 4 and len(result.history) == 5
    g = result.gaussians
    assert all(torch.isfinite(t).all() for t in (g.means, g.cholesky, g.colors))
    torch.testing.assert_close(g.means, clean.gaussians.means)
    assert np.isfinite(result.psnr) and result.psnr == pytest.approx(clean.psnr, abs=1e-4)


def test_zero_covariance_start_is_widened_with_a_warning():
    start = gilab.random_gaussians(20, 24, 32)
    start.cholesky[:] = 0
    with pytest.warns(UserWarning, match="20 of 20 Gaussians"):
        result = gilab.fit(smooth_image(), init=start, iters=10, progress=False)
    assert torch.isfinite(result.gaussians.cholesky).all() and np.isfinite(result.psnr)


def test_gaussians_file_with_non_finite_colour(tmp_path, capsys):
    g = gilab.random_gaussians(10, 24, 32)
    g.colors[2, 1] = float("inf")
    path = g.save(tmp_path / "inf.safetensors")
    with pytest.raises(NonFiniteError, match="colors"):
        gilab.Gaussians2D.load(path)
    with pytest.raises(NonFiniteError):
        gilab.render(g)
    assert main(["render", str(path), "--out", str(tmp_path / "x.png")]) == 2
    assert "non-finite" in one_line_error(capsys, "render") and not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------------------------ 3. tensors
def test_uint8_tensor_is_scaled_by_255_everywhere():
    image = (smooth_image() * 255).round().to(torch.uint8)
    result = gilab.fit(image, n=40, iters=3, progress=False)
    assert 5 < result.psnr < 60
    from gilab.generator import Generator

    g = Generator.from_pretrained()(image.permute(1, 2, 0).contiguous())  # HWC uint8
    assert g.colors.abs().max() < 5  # colours of a [0, 1] image, not of 0..255


@pytest.mark.parametrize("make, match", [
    (lambda: smooth_image() * 1.5, r"float values must lie in \[0, 1\]"),
    (lambda: smooth_image() - 0.5, r"float values must lie in \[0, 1\]"),
    (lambda: torch.zeros(3, 0, 0), "empty"),
    (lambda: torch.zeros(2, 8, 8), "expected an image"),
    (lambda: torch.zeros(3, 8, 8, dtype=torch.int32), "unsupported dtype"),
])
def test_bad_image_tensors(make, match):
    from gilab.generator import Generator

    with pytest.raises(ImageError, match=match):
        gilab.fit(make(), n=5, iters=1, progress=False)
    with pytest.raises(ImageError, match=match):
        Generator.from_pretrained()(make())


def test_float_tiff_above_one_is_refused_like_an_array(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.full((8, 8), 1.7, np.float32), mode="F").save(path)
    with pytest.raises(ImageError, match=r"\[0, 1\].*1.7"):
        gilab.io.load_image(path)


@pytest.mark.parametrize("density", [-1.0, 0.0, float("nan"), float("inf")])
def test_generator_density_is_checked(density):
    from gilab.generator import Generator

    with pytest.raises(ArgumentError, match="density"):
        Generator.from_pretrained()(smooth_image(), density=density)


# ------------------------------------------------------------------------------------------------ 4. downloads
def _tiny_jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), seed, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_tampered_archive_never_replaces_verified_files(tmp_path, monkeypatch):
    real = {f"train/{i}.jpg": _tiny_jpeg(i) for i in range(3)}
    sums = {rel: datasets.hashlib.sha256(data).hexdigest() for rel, data in real.items()}
    monkeypatch.setattr(datasets, "_embedded_sums", lambda name: sums)
    top = tmp_path / "data" / "train" / "bsds500"
    for rel, data in real.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(data)
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for rel, data in {**real, "train/1.jpg": b"tampered"}.items():
            info = tarfile.TarInfo(f"BSR/BSDS500/data/images/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(datasets, "BSDS500_ARCHIVE_BYTES", archive.stat().st_size)
    monkeypatch.setattr(datasets, "_retrieve", lambda url, folder, fname, h: Path(shutil.copy(archive, folder)))
    with pytest.raises(DataError, match=r"train/1\.jpg in .*sha256 does not match.*nothing was written"):
        datasets._fetch_bsds500(tmp_path / "data")
    assert {rel: (top / rel).read_bytes() for rel in real} == real


# ------------------------------------------------------------------------------------------------ 5. CLI
FIT_MISTAKES = {
    "n 1 net": (["--n", "1", "--init", "net"], "target_count must be an integer >= 8"),
    "n 1 quadtree": (["--n", "1", "--init", "quadtree"], "out of reach"),
    "n 0": (["--n", "0"], "n must be an integer >= 1"),
    "lr -1": (["--lr", "-1"], "lr must be a positive finite number"),
    "backend foo": (["--backend", "foo"], "invalid choice: 'foo'"),
    "iters -3": (["--iters", "-3"], "iters must be an integer >= 0"),
    "seconds -1": (["--seconds", "-1"], "seconds must be a positive finite number"),
    "seconds nan": (["--seconds", "nan"], "seconds must be a positive finite number"),
    "iters and seconds": (["--iters", "3", "--seconds", "2"], "not allowed with argument"),
}


@pytest.mark.parametrize("case", list(FIT_MISTAKES))
def test_fit_mistakes(case, png, tmp_path, capsys):
    args, message = FIT_MISTAKES[case]
    out = tmp_path / "out"
    assert main(["fit", str(png), *args, "--out", str(out), "--no-progress"]) == 2
    assert message in one_line_error(capsys, "fit")
    assert not out.exists()


@pytest.mark.skipif(CUDA, reason="gsplat is available with CUDA")
def test_fit_gsplat_without_cuda(png, tmp_path, capsys):
    assert main(["fit", str(png), "--backend", "gsplat", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "not available here" in one_line_error(capsys, "fit")
    with pytest.raises(BackendError):
        gilab.fit(smooth_image(), n=5, iters=1, backend="gsplat", progress=False)


def test_fit_out_naming_a_file_is_refused_before_the_fit(png, tmp_path, capsys, monkeypatch):
    import gilab.fitting

    monkeypatch.setattr(gilab.fitting, "fit", lambda *a, **k: pytest.fail("the fit ran"))
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert main(["fit", str(png), "--out", str(taken), "--no-progress"]) == 2
    assert "is a file, not a folder" in one_line_error(capsys, "fit") and taken.read_text() == "mine"


RENDER_MISTAKES = {
    "scale nan": (["--scale", "nan"], "scale must be a positive finite number"),
    "scale inf": (["--scale", "inf"], "scale must be a positive finite number"),
    "scale 0.001": (["--scale", "0.001"], "smaller than one pixel"),
    "scale -2": (["--scale", "-2"], "scale must be a positive finite number"),
    "scale 1e6": (["--scale", "1e6"], "over the limit"),
    "size 0 0": (["--size", "0", "0"], "image size must be positive"),
    "backend foo": (["--backend", "foo"], "invalid choice"),
}


@pytest.mark.parametrize("case", list(RENDER_MISTAKES))
def test_render_mistakes(case, gaussians_file, tmp_path, capsys):
    args, message = RENDER_MISTAKES[case]
    out = tmp_path / "x.png"
    assert main(["render", str(gaussians_file), *args, "--out", str(out)]) == 2
    assert message in one_line_error(capsys, "render")
    assert not out.exists()


def test_render_out_naming_a_folder(gaussians_file, tmp_path, capsys):
    assert main(["render", str(gaussians_file), "--out", str(tmp_path)]) == 2
    assert "is a folder" in one_line_error(capsys, "render")


def _write_gaussians(path: Path, tensors: dict, **meta) -> Path:
    metadata = {"format": "gilab.gaussians", "version": "1", "param": "cholesky", "size": "[24, 32]", **meta}
    save_file(tensors, str(path), metadata=metadata)
    return path


def _tensors(**changes):
    g = gilab.random_gaussians(10, 24, 32)
    base = {"means": g.means, "colors": g.colors, "opacities": g.opacities, "cholesky": g.cholesky}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


BAD_FILES = {
    "extra tensor": (_tensors(extra=torch.zeros(3)), {}, "unexpected extra"),
    "renamed tensor": ({**_tensors(colors=None), "colours": torch.rand(10, 3)}, {}, "missing colors; unexpected colours"),
    "missing tensor": (_tensors(opacities=None), {}, "missing opacities"),
    "int32 data": (_tensors(means=torch.zeros(10, 2, dtype=torch.int32)), {}, "means must be floating point"),
    "malformed size": (_tensors(), {"size": "[24"}, "malformed size"),
    "size of three": (_tensors(), {"size": "[24, 32, 3]"}, "size must be [height, width]"),
    "negative size": (_tensors(), {"size": "[-24, 32]"}, "size must be [height, width]"),
    "shape mismatch": (_tensors(colors=torch.rand(9, 3)), {}, "colors must have shape"),
    "foreign format": (_tensors(), {"format": "something.else"}, "not a gilab Gaussians file"),
    "newer version": (_tensors(), {"version": "99"}, "newer than this gilab"),
    "bad version": (_tensors(), {"version": "one"}, "malformed version"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_gaussians_files(case, tmp_path, capsys):
    tensors, meta, message = BAD_FILES[case]
    path = _write_gaussians(tmp_path / "bad.safetensors", tensors, **meta)
    with pytest.raises(FileFormatError, match="bad.safetensors"):
        gilab.Gaussians2D.load(path)
    assert main(["render", str(path), "--out", str(tmp_path / "x.png")]) == 2
    assert message in one_line_error(capsys, "render")


def test_float16_gaussians_file_is_read_as_float32(tmp_path, capsys):
    tensors = {k: v.half() for k, v in _tensors().items()}
    path = _write_gaussians(tmp_path / "half.safetensors", tensors)
    g = gilab.Gaussians2D.load(path)
    assert g.dtype == torch.float32 and torch.equal(g.means, tensors["means"].float())
    assert main(["render", str(path), "--out", str(tmp_path / "x.png")]) == 0
    assert Image.open(tmp_path / "x.png").size == (32, 24)


def test_bench_mistakes(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", "--images", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in one_line_error(capsys, "bench")
    assert main(["bench", "--images", str(empty), "--budgets", "0"]) == 2
    assert "--budgets must be positive" in one_line_error(capsys, "bench")
    assert main(["bench", "--images", str(tmp_path / "nowhere")]) == 2
    assert "no such image folder" in one_line_error(capsys, "bench")
    assert main(["bench", "--images", str(empty), "--shard", "3/2"]) == 2
    one_line_error(capsys, "bench")


@pytest.fixture
def training_data(tmp_path) -> Path:
    """data/{train,val}/ with two tiny images each, and ppm/{train,val}/ with their pseudo-PPMs."""
    for split in ("train", "val"):
        (tmp_path / "data" / split).mkdir(parents=True)
        (tmp_path / "ppm" / split).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(tmp_path / "data" / split / f"{i}.png")
            np.save(tmp_path / "ppm" / split / f"{i}.npy", np.full((32, 32), 0.5, np.float16))
    return tmp_path


def test_train_generator_mistakes(training_data, capsys):
    root = training_data
    base = ["train-generator", "--data", str(root / "data"), "--out", str(root / "run"), "--no-progress",
            "--crop", "32", "--max-steps", "1"]
    assert main([*base, "--ppm-dir", str(root / "ppm"), "--batch-size", "8"]) == 2
    assert "cannot fill one batch of 8" in one_line_error(capsys, "train-generator")
    assert main([*base, "--ppm-dir", str(root / "none")]) == 2
    assert "run `gilab prepare-ppm` first" in one_line_error(capsys, "train-generator")
    (root / "ppm" / "train" / "1.npy").write_bytes(b"\x93NUMPY garbage")
    assert main([*base, "--ppm-dir", str(root / "ppm")]) == 2
    assert "not a readable pseudo-PPM" in one_line_error(capsys, "train-generator")
    assert main(["train-generator", "--export", str(root / "x.pt")]) == 2
    assert "--export needs --to" in one_line_error(capsys, "train-generator")
    assert main([*base, "--batch-size", "0"]) == 2
    one_line_error(capsys, "train-generator")
    assert not (root / "run" / "last.pt").exists()


def test_prepare_ppm_folders_with_the_same_name(tmp_path, capsys):
    for parent in ("a", "b"):
        (tmp_path / parent / "imgs").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / parent / "imgs" / "x.jpg")
    assert main(["prepare-ppm", str(tmp_path / "a" / "imgs"), str(tmp_path / "b" / "imgs"),
                 "--out", str(tmp_path / "ppm"), "--iters", "0", "--no-progress"]) == 2
    assert "two image folders are named 'imgs'" in one_line_error(capsys, "prepare-ppm")
    assert not (tmp_path / "ppm").exists()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "imgs" / "x.png")
    assert main(["prepare-ppm", str(tmp_path / "a" / "imgs"), "--out", str(tmp_path / "ppm"), "--iters", "0",
                 "--no-progress"]) == 2
    assert "several suffixes" in one_line_error(capsys, "prepare-ppm")


def test_interrupt_during_start_up_is_one_line(monkeypatch, capsys):
    import gilab.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(gilab.cli, "build_parser", interrupted)
    assert main(["fit", "x.png"]) == 130
    assert capsys.readouterr().err.strip() == "gilab: interrupted"


# ------------------------------------------------------------------------------------------------ 6. integrity
def test_concurrent_saves_to_one_path(tmp_path):
    g = gilab.random_gaussians(50, 24, 32)
    path = tmp_path / "shared.safetensors"
    errors = []

    def writer():
        for _ in range(30):
            try:
                g.save(path)
            except Exception as exc:  # noqa: BLE001 - any failure is what this test counts
                errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert torch.equal(gilab.Gaussians2D.load(path).means, g.means)
    assert [p.name for p in tmp_path.iterdir()] == ["shared.safetensors"]  # no temporary left behind


def test_outputs_get_normal_file_modes(png, tmp_path):
    mask = os.umask(0o022)
    try:
        assert main(["fit", str(png), "--n", "20", "--iters", "2", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    finally:
        os.umask(mask)
    for path in (tmp_path / "o").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name


def test_resumed_log_keeps_one_validation_row_per_epoch(tmp_path):
    import json

    from gilab.training.loop import _truncate_log

    log = tmp_path / "log.jsonl"
    rows = [{"step": 1, "epoch": 0, "loss": 1}, {"step": 2, "epoch": 0, "loss": 1},
            {"step": 2, "epoch": 1, "val_psnr": 20, "val_n": 10}, {"step": 3, "epoch": 1, "loss": 1}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _truncate_log(log, step=2, epoch=0)  # checkpoint on the epoch's last step, before its validation
    assert [json.loads(r) for r in log.read_text().splitlines()] == rows[:2]


# ------------------------------------------------------------------------------------------------ gilab.io's cases
@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"this is not an image", "not an image file"),
    ("truncated", "truncated"),
    ("directory", "is a directory"),
])
def test_io_docstring_file_cases(content, message, tmp_path, png):
    path = tmp_path / "case.png"
    if content == "truncated":
        path.write_bytes(png.read_bytes()[:60])
    elif content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        gilab.io.load_image(path)


def test_io_docstring_value_rules(tmp_path, monkeypatch):
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black: composited over white
    assert torch.equal(gilab.io.to_tensor_image(rgba), torch.ones(3, 4, 4))
    grey16 = np.full((4, 4), 65535 // 3, np.uint16)
    assert gilab.io.to_tensor_image(grey16)[0, 0, 0].item() == pytest.approx(1 / 3, abs=1e-4)
    assert torch.equal(gilab.io.to_tensor_image(np.eye(4, dtype=bool))[1], torch.eye(4))
    with pytest.raises(ImageError, match="unsupported dtype int64"):
        gilab.io.to_tensor_image(np.zeros((4, 4, 3), np.int64))
    near = np.full((4, 4, 3), 1.0005, np.float32)  # within the rounding tolerance: clipped silently
    assert gilab.io.to_tensor_image(near).max().item() == 1.0
    monkeypatch.setenv("GILAB_MAX_PIXELS", "10")
    with pytest.raises(ImageError, match="over the limit of 10"):
        gilab.io.to_tensor_image(np.zeros((4, 4, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.setenv("GILAB_MAX_PIXELS", "abc")
        with pytest.raises(ImageError, match="GILAB_MAX_PIXELS must be a positive number"):
            gilab.io.to_tensor_image(np.zeros((4, 4, 3), np.uint8))


def test_pickle_module_is_not_needed_to_read_anything():
    """A guard on the guard: Marker really runs code when unpickled (so the tests above would catch a loader)."""
    marker = Path(os.environ.get("TMPDIR", "/tmp")) / f"gilab-marker-{os.getpid()}"
    Marker.path = str(marker)
    pickle.Unpickler(io.BytesIO(pickle.dumps(Marker()))).load()
    assert marker.exists()
    marker.unlink()


def test_losses_read_in_batches_give_the_same_history_and_roll_back_further(monkeypatch):
    """What CUDA does (read the losses every CUDA_READ_EVERY steps), checked on the CPU."""
    import gilab.fitting

    image = smooth_image()
    every_step = gilab.fit(image, n=30, iters=12, progress=False, fused=False)
    monkeypatch.setattr(gilab.fitting, "CPU_READ_EVERY", 7)
    batched = gilab.fit(image, n=30, iters=12, progress=False, fused=False)
    assert batched.history.loss == every_step.history.loss

    def poison(state):
        if state.iteration == 5:
            with torch.no_grad():
                state.model.colors[0, 0] = float("nan")

    # rows 0-6 are read together at step 7 and row 5 is NaN: the last row known finite before it is row 0
    with pytest.warns(UserWarning, match="after iteration 0"):
        result = gilab.fit(image, n=30, iters=20, callback=poison, callback_every=1, progress=False, fused=False)
    assert result.diverged and result.iterations == 0 and len(result.history) == 1
