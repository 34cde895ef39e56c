"""gilab.datasets: finding, verifying and (offline here: simulated) downloading the image sets.

No test touches the network: downloads go through ``gilab.datasets._retrieve``, which the tests replace.
"""

import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from gilab import datasets
from gilab.datasets import bsds500, data_root, div2k_valid_x2, download, kodak
from gilab.errors import DataError


@pytest.fixture(autouse=True)
def no_download_env(monkeypatch):
    monkeypatch.delenv("GILAB_DOWNLOAD", raising=False)


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def tiny_file(fmt: str, value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (value % 256, 0, 0)).save(buf, format=fmt)
    return buf.getvalue()


def link_tree(src: Path, dst: Path, names):
    """Symlink files of the staged data into a tmp folder (no copies of the data)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        (dst / name).symlink_to(src / name)


# --- the staged data ---------------------------------------------------------------------------------------------

def test_kodak_from_gilab_data(data_root, monkeypatch):
    monkeypatch.setenv("GILAB_DATA", str(data_root))
    paths = kodak()
    assert [p.name for p in paths] == [f"kodim{i:02d}.png" for i in range(1, 25)]
    assert all(p.parent == data_root / "kodak" for p in paths)
    assert kodak(root=data_root) == paths


def test_bsds500_train_and_val(data_root):
    train, val = bsds500("train", root=data_root), bsds500("val", root=data_root)
    assert len(train) == 200 and len(val) == 100
    assert train == sorted(train) and all(p.suffix == ".jpg" for p in train + val)
    assert not {p.name for p in train} & {p.name for p in val}


def test_checksum_mismatch_names_the_file(data_root, tmp_path):
    names = [f"kodim{i:02d}.png" for i in range(1, 25)]
    link_tree(data_root / "kodak", tmp_path / "kodak", names[1:])
    copy = tmp_path / "kodak" / names[0]
    data = bytearray((data_root / "kodak" / names[0]).read_bytes())
    data[1000] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        kodak(root=tmp_path)
    message = one_line(info)
    assert str(copy) in message and "sha256" in message


def test_kodak_download_fetches_missing_and_repairs(data_root, tmp_path, monkeypatch):
    calls = []

    def fake_retrieve(url, folder, fname, known_hash):
        calls.append((url, known_hash))
        assert url == f"http://r0k.us/graphics/kodak/kodak/{fname}" and known_hash.startswith("sha256:")
        target = Path(folder) / fname
        if not (target.is_file() and datasets.sha256(target) == known_hash[7:]):  # what pooch does
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_root / "kodak" / fname, target)
        return target

    monkeypatch.setattr(datasets, "_retrieve", fake_retrieve)
    paths = download("kodak", root=tmp_path)
    assert len(paths) == 24 and len(calls) == 24
    assert (tmp_path / "kodak" / "SHA256SUMS").read_text().splitlines()[0].endswith("  kodim01.png")
    paths[4].write_bytes(b"corrupt")
    with pytest.raises(DataError, match="kodim05.png"):
        kodak(root=tmp_path)
    assert kodak(root=tmp_path, download=True) == paths  # download=True replaces the bad file


# --- offline: absent data ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, url", [
    (lambda root: kodak(root=root), "http://r0k.us/graphics/kodak/"),
    (lambda root: bsds500("train", root=root), "BSR_bsds500.tgz"),
    (lambda root: bsds500("test", root=root), "BSR_bsds500.tgz"),
    (lambda root: div2k_valid_x2(root=root), "https://data.vision.ee.ethz.ch/cvl/DIV2K/"),
])
def test_absent_data_names_gilab_data_and_the_url(tmp_path, call, url):
    with pytest.raises(DataError) as info:
        call(tmp_path)
    message = one_line(info)
    assert "GILAB_DATA" in message and url in message and str(tmp_path) in message


def test_failed_download_names_gilab_data_and_the_url(tmp_path, monkeypatch):
    def offline(url, folder, fname, known_hash):
        raise ConnectionError("Name or service not known\n(no network)")

    monkeypatch.setattr(datasets, "_retrieve", offline)
    monkeypatch.setenv("GILAB_DOWNLOAD", "1")  # download=None follows GILAB_DOWNLOAD
    with pytest.raises(DataError) as info:
        kodak(root=tmp_path)
    message = one_line(info)
    assert "failed" in message and "ConnectionError" in message
    assert "GILAB_DATA" in message and "http://r0k.us/graphics/kodak/" in message
    with pytest.raises(DataError, match="not found"):
        kodak(root=tmp_path, download=False)  # an explicit False wins over the variable


def test_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("GILAB_DATA", raising=False)
    import pooch

    assert data_root() == Path(pooch.os_cache("gilab"))
    monkeypatch.setenv("GILAB_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root(str(tmp_path)) == tmp_path


def test_bad_names():
    with pytest.raises(DataError, match="kodak, bsds500, div2k_valid_x2"):
        download("imagenet")
    with pytest.raises(DataError, match="train, val, test"):
        bsds500("training")


def test_shipped_checksums():
    assert len(datasets._embedded_sums("kodak")) == 24
    sums = datasets._embedded_sums("bsds500")
    assert sum(k.startswith("train/") for k in sums) == 200 and sum(k.startswith("val/") for k in sums) == 100
    assert all(len(v) == 64 for v in sums.values())


# --- archives (built here, tiny) ---------------------------------------------------------------------------------

def test_div2k_zip_is_extracted_verified_and_recorded(tmp_path, monkeypatch):
    archive = tmp_path / "fake.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(801, 901):
            zf.writestr(f"DIV2K_valid_LR_bicubic/X2/{i:04d}x2.png", tiny_file("PNG", i))
        zf.writestr("DIV2K_valid_LR_bicubic/X2/readme.txt", "ignored")
        zf.writestr("../escape.png", tiny_file("PNG", 0))

    def fake_retrieve(url, folder, fname, known_hash):
        assert url == datasets.DIV2K_URL and known_hash == f"sha256:{datasets.DIV2K_SHA256}"
        return Path(shutil.copyfile(archive, Path(folder) / fname))

    monkeypatch.setattr(datasets, "_retrieve", fake_retrieve)
    root = tmp_path / "data"
    paths = div2k_valid_x2(root=root, download=True)
    assert [p.name for p in paths] == [f"{i:04d}x2.png" for i in range(801, 901)]
    assert paths[0].parent == root / "div2k_valid_x2" / "DIV2K_valid_LR_bicubic" / "X2"
    assert not (root / "escape.png").exists() and not (tmp_path / "escape.png").exists()
    assert sorted(os.listdir(root / "div2k_valid_x2")) == ["DIV2K_valid_LR_bicubic", "SHA256SUMS"]  # archive gone
    paths[7].write_bytes(b"changed")
    with pytest.raises(DataError) as info:
        div2k_valid_x2(root=root)
    assert str(paths[7]) in one_line(info)


def test_bsds500_tgz_test_split(tmp_path, monkeypatch):
    archive = tmp_path / "fake.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for i in range(200):
            add(f"BSR/BSDS500/data/images/test/{1000 + i}.jpg", tiny_file("JPEG", i))
        add("BSR/BSDS500/data/images/test/Thumbs.db", b"x")
        add("BSR/BSDS500/data/groundTruth/test/1000.mat", b"x")

    def fake_retrieve(url, folder, fname, known_hash):
        assert url == datasets.BSDS500_URL and known_hash is None
        return Path(shutil.copyfile(archive, Path(folder) / fname))

    monkeypatch.setattr(datasets, "_retrieve", fake_retrieve)
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"download into .* failed .*70,763,455"):  # the archive's pinned size
        bsds500("test", root=root, download=True)
    monkeypatch.setattr(datasets, "BSDS500_ARCHIVE_BYTES", archive.stat().st_size)
    paths = bsds500("test", root=root, download=True)
    assert len(paths) == 200 and paths[0].name == "1000.jpg"
    assert sorted(os.listdir(root / "train" / "bsds500" / "test")) == sorted(p.name for p in paths)
    manifest = (root / "train" / "bsds500" / "SHA256SUMS").read_text().splitlines()
    assert len(manifest) == 200 and manifest[0].endswith("  test/1000.jpg")
    paths[3].unlink()
    with pytest.raises(DataError, match="lacks 1 of 200 files .first: 1003.jpg"):
        bsds500("test", root=root)
