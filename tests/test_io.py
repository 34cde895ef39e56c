"""gilab.io: every kind of image file becomes (3, H, W) float32 in [0, 1]; every bad file, one clear line."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from gilab.errors import ImageError
from gilab.io import default_image, load_image, max_pixels_limit, save_image, to_tensor_image


def rgb_array(h=12, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def check_image(t, h, w):
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (3, h, w)
    assert t.min() >= 0 and t.max() <= 1


def test_rgb_png_exact(tmp_path):
    a = rgb_array()
    Image.fromarray(a).save(tmp_path / "rgb.png")
    t = load_image(tmp_path / "rgb.png")
    check_image(t, 12, 16)
    assert torch.equal(t, torch.from_numpy(a).permute(2, 0, 1).float() / 255)


def test_grayscale_8bit(tmp_path):
    g = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(g, "L").save(tmp_path / "l.png")
    t = load_image(str(tmp_path / "l.png"))  # str paths too
    check_image(t, 12, 16)
    assert torch.equal(t[0], t[1]) and torch.equal(t[1], t[2])
    assert torch.equal(t[0], torch.from_numpy(g).float() / 255)


def test_bilevel(tmp_path):
    im = Image.fromarray(np.eye(8, dtype=bool)).convert("1")
    im.save(tmp_path / "b.png")
    t = load_image(tmp_path / "b.png")
    check_image(t, 8, 8)
    assert set(t.unique().tolist()) == {0.0, 1.0}
    assert t[:, 3, 3].tolist() == [1.0, 1.0, 1.0] and t[:, 0, 3].tolist() == [0.0, 0.0, 0.0]


def test_16bit_grayscale_keeps_precision(tmp_path):
    g = (np.arange(10 * 20).reshape(10, 20) * 321 + 7).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    t = load_image(tmp_path / "g16.png")
    check_image(t, 10, 20)
    expected = torch.from_numpy(g.astype(np.float32) / 65535)
    assert torch.allclose(t[1], expected, atol=1e-7)
    # neighbouring 16-bit levels stay distinct: no rounding to 8 bits on the way
    assert len(t[0].unique()) == 200


def test_palette(tmp_path):
    a = rgb_array(10, 10)
    im = Image.fromarray(a).quantize(16)
    assert im.mode == "P"
    im.save(tmp_path / "p.png")
    t = load_image(tmp_path / "p.png")
    check_image(t, 10, 10)
    expected = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.equal(t, expected)


def test_palette_transparency_on_white(tmp_path):
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 1  # index 1 (blue) is fully transparent
    im.save(tmp_path / "pt.png", transparency=1)
    t = load_image(tmp_path / "pt.png")
    check_image(t, 2, 4)
    assert t[:, 0, 0].tolist() == [1.0, 0.0, 0.0]  # opaque red
    assert t[:, 0, 1].tolist() == [1.0, 1.0, 1.0]  # transparent -> the white background
    t = load_image(tmp_path / "pt.png", background=(0, 0, 0))
    assert t[:, 0, 1].tolist() == [0.0, 0.0, 0.0]


def test_rgba_composited(tmp_path):
    a = np.zeros((2, 2, 4), np.uint8)
    a[..., 0] = 200
    a[..., 3] = [[255, 0], [51, 255]]
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    t = load_image(tmp_path / "rgba.png")
    check_image(t, 2, 2)
    alpha = 51 / 255
    assert torch.allclose(t[:, 0, 0], torch.tensor([200 / 255, 0, 0]))
    assert torch.allclose(t[:, 0, 1], torch.ones(3))
    assert torch.allclose(t[:, 1, 0], torch.tensor([200 / 255 * alpha + (1 - alpha), 1 - alpha, 1 - alpha]))
    grey = load_image(tmp_path / "rgba.png", background=(0.5, 0.5, 0.5))
    assert torch.allclose(grey[:, 0, 1], torch.full((3,), 0.5))


def test_la_composited(tmp_path):
    a = np.stack([np.full((3, 3), 100, np.uint8), np.full((3, 3), 0, np.uint8)], axis=-1)
    a[0, 0, 1] = 255
    Image.fromarray(a, "LA").save(tmp_path / "la.png")
    t = load_image(tmp_path / "la.png")
    check_image(t, 3, 3)
    assert torch.allclose(t[:, 0, 0], torch.full((3,), 100 / 255))
    assert torch.allclose(t[:, 1, 1], torch.ones(3))


def test_exif_orientation_swaps_height_and_width(tmp_path):
    a = np.full((16, 48, 3), 128, np.uint8)  # landscape pixels ...
    a[:8, :8] = [255, 0, 0]  # a red block in the stored top-left corner (JPEG keeps an 8x8 block's colour)
    exif = Image.Exif()
    exif[0x0112] = 6  # ... "rotate 90 degrees clockwise to view"
    Image.fromarray(a).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    t = load_image(tmp_path / "rot.jpg")
    check_image(t, 48, 16)  # portrait, as a viewer shows it
    # rotating clockwise carries the stored top-left corner to the top-right
    assert t[0, 2, -3] > 0.9 and t[1, 2, -3] < 0.1
    assert abs(t[0, 2, 2] - 128 / 255) < 0.02


def test_default_image():
    t = default_image()
    check_image(t, 600, 512)
    assert t.std() > 0.1


def test_to_tensor_image_inputs(tmp_path):
    a = rgb_array(5, 7)
    ref = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    assert torch.equal(to_tensor_image(a), ref)  # HWC uint8
    assert torch.equal(to_tensor_image(Image.fromarray(a)), ref)  # PIL
    assert torch.equal(to_tensor_image(a.astype(np.float64) / 255), ref)  # HWC float
    assert torch.equal(to_tensor_image(ref), ref)  # CHW tensor
    assert torch.equal(to_tensor_image(torch.from_numpy(a)), ref)  # HWC uint8 tensor
    assert torch.equal(to_tensor_image(a.astype(np.uint16) * 257), ref)  # 16-bit
    grey = to_tensor_image(a[..., 0])
    assert grey.shape == (3, 5, 7) and torch.equal(grey[0], ref[0]) and torch.equal(grey[2], ref[0])
    rgba = np.concatenate([a, np.zeros((5, 7, 1), np.uint8)], axis=-1)
    assert torch.equal(to_tensor_image(rgba), torch.ones(3, 5, 7))  # fully transparent -> white
    Image.fromarray(a).save(tmp_path / "a.png")
    assert torch.equal(to_tensor_image(tmp_path / "a.png"), ref)


def test_to_tensor_image_rejects(tmp_path):
    with pytest.raises(ImageError, match=r"\[0, 1\].*255"):
        to_tensor_image(np.full((4, 4, 3), 200.0))
    with pytest.raises(ImageError, match="shape"):
        to_tensor_image(np.zeros((4, 4, 5)))
    with pytest.raises(ImageError, match="dtype"):
        to_tensor_image(np.zeros((4, 4, 3), np.int64))
    with pytest.raises(ImageError, match="list"):
        to_tensor_image([[0.0]])
    with pytest.raises(ImageError, match="limit"):
        to_tensor_image(np.zeros((10, 10, 3), np.uint8), max_pixels=99)


def test_save_image_roundtrip(tmp_path):
    t = torch.rand(3, 9, 11, dtype=torch.float64)
    t[0, 0, 0], t[1, 0, 0], t[2, 0, 0] = -0.5, 1.5, float("nan")
    out = save_image(t, tmp_path / "sub" / "x.png")
    assert out == tmp_path / "sub" / "x.png"
    im = Image.open(out)
    assert im.format == "PNG" and im.mode == "RGB" and im.size == (11, 9)
    back = load_image(out)
    assert back[:, 0, 0].tolist() == [0.0, 1.0, 0.0]  # clamped; NaN written as 0
    assert (back[:, 1:] - t[:, 1:].float()).abs().max() <= 0.5 / 255 + 1e-6
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]  # no temporary file left behind


def test_save_image_rejects_bad_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        save_image(torch.zeros(2, 4, 4), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


# --- bad files: one line, naming the file and the reason ---------------------------------------------------------

def assert_one_line_error(path, match, **kwargs):
    with pytest.raises(ImageError) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert re.search(match, message), message
    return message


def test_missing_file(tmp_path):
    assert_one_line_error(tmp_path / "nope.png", "no such file")


def test_directory(tmp_path):
    assert_one_line_error(tmp_path, "directory")


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert_one_line_error(tmp_path / "empty.png", "empty")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("this is not\na PNG\n")
    assert_one_line_error(tmp_path / "notes.png", "not an image")


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_file(tmp_path, suffix):
    Image.fromarray(rgb_array(64, 64)).save(tmp_path / f"full.{suffix}")
    data = (tmp_path / f"full.{suffix}").read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(cut, "truncated")


def test_over_pixel_limit(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    message = assert_one_line_error(tmp_path / "big.png", "limit", max_pixels=1000)
    assert "40x30" in message
    monkeypatch.setenv("GILAB_MAX_PIXELS", "1199")
    assert max_pixels_limit() == 1199
    assert_one_line_error(tmp_path / "big.png", "over the limit")
    monkeypatch.setenv("GILAB_MAX_PIXELS", "1200")
    check_image(load_image(tmp_path / "big.png"), 30, 40)
    monkeypatch.setenv("GILAB_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="GILAB_MAX_PIXELS"):
        load_image(tmp_path / "big.png")


def test_pillow_decompression_bomb_is_an_image_error(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses above twice this
    assert_one_line_error(tmp_path / "bomb.png", "decompression-bomb", max_pixels=10**9)


def test_16bit_rgb_png_warns(tmp_path):
    """Pillow has no 16-bit RGB mode: such PNGs decode at 8 bits, and gilab says so."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + np.full((4, 3), 1000 * (i + 1), ">u2").tobytes() for i in range(3))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    (tmp_path / "rgb16.png").write_bytes(png)
    with pytest.warns(UserWarning, match="8 bits"):
        t = load_image(tmp_path / "rgb16.png")
    check_image(t, 3, 4)


def test_kodak_image_fixture(kodak_image):
    check_image(kodak_image, 512, 768)


def test_figures_dir_is_found_from_anywhere_and_names_what_is_missing(tmp_path, monkeypatch):
    from pathlib import Path

    from gilab.errors import GilabError
    from gilab.files import figures_dir

    monkeypatch.chdir(tmp_path)  # no figures/ here or above: the one beside the package (this checkout)
    assert figures_dir("codec.json") == Path(__file__).resolve().parents[1] / "figures"
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "codec.json").write_text("{}")
    assert figures_dir("codec.json") == tmp_path / "figures"  # the working directory's own comes first
    with pytest.raises(GilabError, match="no figures/ folder with nothing.json"):
        figures_dir("nothing.json")
