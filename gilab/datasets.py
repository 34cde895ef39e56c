"""The evaluation and training image sets, found on disk or downloaded from their official sites, and verified.

    paths = gilab.datasets.kodak()                   # 24 PNGs, 768x512 or 512x768: the evaluation set
    paths = gilab.datasets.bsds500("train")          # 200 JPEGs, 481x321: the generator's training set
    paths = gilab.datasets.div2k_valid_x2()          # 100 PNGs, about 1020x680
    gilab.datasets.download("kodak")                 # what `gilab download kodak` runs

Each returns a sorted ``list[Path]``. Where the data live (the *root*): the ``root`` argument, else the
``GILAB_DATA`` environment variable, else pooch's per-user cache folder (``pooch.os_cache("gilab")``,
e.g. ``~/.cache/gilab``). Under a root:

    kodak/kodim01.png .. kodim24.png                 (+ kodak/SHA256SUMS)
    train/bsds500/{train,val,test}/*.jpg             (+ train/bsds500/SHA256SUMS)
    div2k_valid_x2/DIV2K_valid_LR_bicubic/X2/0801x2.png .. 0900x2.png   (+ div2k_valid_x2/SHA256SUMS)

Verification. The sha256 of every Kodak file and of every BSDS500 train and val file ships inside gilab
(``gilab/data/*.sha256``) and is checked on every call (once per process and file: the result is cached by size
and modification time). No per-file sums are published for the BSDS500 test split or for DIV2K: their archives are
checked on download (DIV2K by its pinned sha256, BSDS500 by its size), and the sums of the extracted files are
written to the local SHA256SUMS, against which later calls check them.

Downloads (with a progress bar) happen only when asked: ``download=True``, or ``download=None`` with the
environment variable ``GILAB_DOWNLOAD=1``. Otherwise a missing set raises :class:`~gilab.errors.DataError`
with one line that names ``GILAB_DATA`` and the official URL. A download replaces missing files and files whose
checksum is wrong; without a download a wrong checksum raises DataError naming the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

from .errors import DataError
from .files import write_atomic

__all__ = ["DATASETS", "bsds500", "data_root", "div2k_valid_x2", "download", "kodak"]

DATASETS = ("kodak", "bsds500", "div2k_valid_x2")

KODAK_URL = "http://r0k.us/graphics/kodak/"
KODAK_FILE_URL = "http://r0k.us/graphics/kodak/kodak/{name}"
BSDS500_URL = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz"
BSDS500_ARCHIVE_BYTES = 70_763_455  # pinned by tensorpack; no sha256 of the archive is published
BSDS500_TEST_COUNT = 200
DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_LR_bicubic_X2.zip"
DIV2K_SHA256 = "60eed9875c697df51204aa579e2a699e1d5215095788a097ff54dd17e2664d57"  # tensorflow_datasets' pin
DIV2K_ARCHIVE_BYTES = 117_763_600
MANIFEST = "SHA256SUMS"


def data_root(root=None) -> Path:
    """The data folder: ``root`` if given, else ``$GILAB_DATA``, else ``pooch.os_cache("gilab")``."""
    if root is not None:
        return Path(os.fspath(root)).expanduser()
    env = os.environ.get("GILAB_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("gilab"))


def _want_download(download: bool | None) -> bool:
    if download is None:
        return os.environ.get("GILAB_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")
    return bool(download)


# --- checksums ---------------------------------------------------------------------------------------------------

_HASHES: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> sha256 hex


def sha256(path: Path) -> str:
    """The sha256 hex digest of a file, cached per process by path, size and modification time."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _parse_sums(text: str) -> dict[str, str]:
    """``sha256sum`` output -> {relative path: hex}; accepts './name' and the binary marker '*name'."""
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*").removeprefix("./")] = digest.lower()
    return sums


def _embedded_sums(name: str) -> dict[str, str]:
    """The checksum list shipped in the package, gilab/data/<name>.sha256."""
    return _parse_sums(resources.files("gilab").joinpath(f"data/{name}.sha256").read_text())


def _local_sums(dataset_dir: Path) -> dict[str, str]:
    path = dataset_dir / MANIFEST
    try:
        return _parse_sums(path.read_text())
    except (OSError, ValueError):
        return {}


# --- one set of expected files -----------------------------------------------------------------------------------

@dataclass
class _Set:
    """The files one call returns. Paths in ``sums`` are relative to ``dataset_dir`` (where SHA256SUMS lives)."""

    title: str                    # "Kodak", "BSDS500 test"
    dataset_dir: str              # relative to the root: "kodak", "train/bsds500", "div2k_valid_x2"
    subdir: str                   # relative to dataset_dir: "", "train", "DIV2K_valid_LR_bicubic/X2"
    names: list[str] | None       # expected file names in subdir; None: any *.jpg, ``count`` of them
    sums: dict[str, str] = field(default_factory=dict)  # embedded (authoritative) sums
    count: int = 0
    url: str = ""                 # official page or archive, for messages
    command: str = ""             # `gilab download ...`

    def rel(self, name: str) -> str:
        return f"{self.subdir}/{name}" if self.subdir else name

    def expected_names(self, top: Path) -> list[str] | None:
        """The file names to expect; without published sums, those the local SHA256SUMS lists (or None)."""
        if self.names is not None:
            return self.names
        prefix = f"{self.subdir}/"
        return sorted(k[len(prefix):] for k in _local_sums(top) if k.startswith(prefix)) or None

    def check(self, base: Path) -> tuple[list[Path], list[str], list[Path]]:
        """(present files, missing names, files whose sha256 is wrong) under ``base``."""
        top = base / self.dataset_dir
        folder = top / self.subdir
        names = self.expected_names(top)
        if names is None:  # nothing to check against but the count
            found = sorted(p.name for p in folder.glob("*.jpg")) if folder.is_dir() else []
            missing = ["*.jpg"] * max(0, self.count - len(found))
        else:
            found = [n for n in names if (folder / n).is_file()]
            missing = [n for n in names if not (folder / n).is_file()]
        expected = {**_local_sums(top), **self.sums}  # the shipped sums win over the local file
        files = [folder / n for n in found]
        bad = [p for p in files if self.rel(p.name) in expected and sha256(p) != expected[self.rel(p.name)]]
        return files, missing, bad

    def absent(self, base: Path, missing: list[str]) -> DataError:
        folder = base / self.dataset_dir / self.subdir
        total = len(self.names) if self.names is not None else self.count
        return DataError(f"{self.title} not found: {folder} lacks {len(missing)} of {total} files "
                         f"(first: {missing[0]}); set GILAB_DATA to a folder that holds {self.dataset_dir}/, "
                         f"or download it with `{self.command}` or download=True (official source: {self.url})")

    def mismatch(self, path: Path) -> DataError:
        return DataError(f"{path}: sha256 does not match the expected {self.title} file "
                         f"(delete it and run `{self.command}`, or pass download=True)")


def _resolve(s: _Set, root, download: bool | None, fetch) -> list[Path]:
    """Verify ``s`` under the root; fetch missing or wrong files first when downloads are wanted."""
    base = data_root(root)
    files, missing, bad = s.check(base)
    if (missing or bad) and _want_download(download):
        try:
            fetch(base)
        except Exception as exc:  # noqa: BLE001 - network, HTTP, disk: all become one line for the CLI
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise DataError(f"{s.title} download into {base} failed ({reason}); get the files from {s.url} "
                            f"and put them under {base / s.dataset_dir}/, or point GILAB_DATA to a folder "
                            f"that holds {s.dataset_dir}/") from None
        files, missing, bad = s.check(base)
    if missing:
        raise s.absent(base, missing)
    if bad:
        raise s.mismatch(bad[0])
    return sorted(files)


# --- writing files -----------------------------------------------------------------------------------------------

def _store(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` unless the file already holds exactly it; returns its sha256."""
    digest = hashlib.sha256(data).hexdigest()
    if not (path.is_file() and sha256(path) == digest):
        write_atomic(path, data)
    return digest


def _verify(contents: dict[str, bytes], sums: dict[str, str], source: str):
    """Raise DataError naming the first file of ``contents`` whose sha256 differs from ``sums`` (where listed)."""
    for rel, data in sorted(contents.items()):
        if rel in sums and hashlib.sha256(data).hexdigest() != sums[rel]:
            raise DataError(f"{rel} in {source}: sha256 does not match the published file; nothing was written "
                            "(the download may be corrupt or tampered with: try again)")


def _write_manifest(top: Path, new: dict[str, str]):
    """Merge ``new`` sums into top/SHA256SUMS (the `sha256sum -c` format, sorted)."""
    sums = {**_local_sums(top), **new}
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
    write_atomic(top / MANIFEST, text.encode())


def _retrieve(url: str, folder: Path, fname: str, known_hash: str | None) -> Path:
    """Download with pooch (progress bar, hash check); pooch keeps an existing file whose hash matches."""
    import pooch

    return Path(pooch.retrieve(url, known_hash=known_hash, fname=fname, path=folder, progressbar=True))


# --- Kodak -------------------------------------------------------------------------------------------------------

KODAK_NAMES = [f"kodim{i:02d}.png" for i in range(1, 25)]


def _kodak_set() -> _Set:
    return _Set("Kodak", "kodak", "", KODAK_NAMES, _embedded_sums("kodak"), url=KODAK_URL,
                command="gilab download kodak")


def _fetch_kodak(base: Path):
    folder = base / "kodak"
    sums = _embedded_sums("kodak")
    for name in KODAK_NAMES:  # there is no archive: one request per file
        _retrieve(KODAK_FILE_URL.format(name=name), folder, name, f"sha256:{sums[name]}")
    _write_manifest(folder, sums)


def kodak(root=None, download: bool | None = None) -> list[Path]:
    """The Kodak Lossless True Color Image Suite: 24 PNGs (768x512 or 512x768), the evaluation set.

    Args:
        root: data folder holding ``kodak/``; default ``$GILAB_DATA``, else ``pooch.os_cache("gilab")``.
        download: fetch missing files from r0k.us (True), or not (False); None: only if ``GILAB_DOWNLOAD=1``.

    Returns:
        The 24 paths ``kodak/kodim01.png`` .. ``kodim24.png``, sorted, each verified against its shipped sha256.

    Raises:
        DataError: files absent (and not downloaded), a failed download, or a wrong checksum.
    """
    return _resolve(_kodak_set(), root, download, _fetch_kodak)


# --- BSDS500 -----------------------------------------------------------------------------------------------------

BSDS500_SPLITS = ("train", "val", "test")
_BSDS500_MEMBER = re.compile(r"^BSR/BSDS500/data/images/(train|val|test)/(\w+\.jpg)$")


def _bsds500_set(split: str) -> _Set:
    if split not in BSDS500_SPLITS:
        raise DataError(f"BSDS500 has no split {split!r}; choose one of {', '.join(BSDS500_SPLITS)}")
    sums = {k: v for k, v in _embedded_sums("bsds500").items() if k.startswith(f"{split}/")}
    names = sorted(k.split("/", 1)[1] for k in sums) or None  # the test split has no published sums
    return _Set(f"BSDS500 {split}", "train/bsds500", split, names, sums, count=BSDS500_TEST_COUNT,
                url=BSDS500_URL, command="gilab download bsds500")


def _fetch_bsds500(base: Path):
    top = base / "train" / "bsds500"
    top.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gilab-download-", dir=top) as tmp:
        archive = _retrieve(BSDS500_URL, Path(tmp), "BSR_bsds500.tgz", None)
        size = archive.stat().st_size
        if size != BSDS500_ARCHIVE_BYTES:
            raise DataError(f"{BSDS500_URL}: downloaded {size:,} bytes, expected {BSDS500_ARCHIVE_BYTES:,}")
        contents = {}
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # read members ourselves: only the images, to paths we build (no traversal)
                match = _BSDS500_MEMBER.match(member.name)
                if match and member.isfile():
                    contents[f"{match[1]}/{match[2]}"] = tar.extractfile(member).read()
    # Every member is checked before anything is written: a tampered archive never replaces a verified file.
    _verify(contents, _embedded_sums("bsds500"), f"{BSDS500_URL} (BSR_bsds500.tgz)")
    _write_manifest(top, {rel: _store(top / rel, data) for rel, data in contents.items()})


def bsds500(split: str = "train", root=None, download: bool | None = None) -> list[Path]:
    """BSDS500 images (481x321 or 321x481 JPEGs): train 200, val 100, test 200. For training the generator.

    Args:
        split: "train", "val" or "test".
        root: data folder holding ``train/bsds500/``; default ``$GILAB_DATA``, else ``pooch.os_cache("gilab")``.
        download: fetch the Berkeley archive (70 MB; all three splits) if files are missing (True), or not
            (False); None: only if ``GILAB_DOWNLOAD=1``.

    Returns:
        Sorted paths ``train/bsds500/<split>/*.jpg``. train and val are verified against shipped sha256 sums;
        test against the sums recorded in ``train/bsds500/SHA256SUMS`` when it was downloaded.
    """
    return _resolve(_bsds500_set(split), root, download, _fetch_bsds500)


# --- DIV2K -------------------------------------------------------------------------------------------------------

DIV2K_SUBDIR = "DIV2K_valid_LR_bicubic/X2"
DIV2K_NAMES = [f"{i:04d}x2.png" for i in range(801, 901)]


def _div2k_set() -> _Set:
    return _Set("DIV2K valid x2", "div2k_valid_x2", DIV2K_SUBDIR, DIV2K_NAMES, url=DIV2K_URL,
                command="gilab download div2k_valid_x2")


def _fetch_div2k(base: Path):
    top = base / "div2k_valid_x2"
    top.mkdir(parents=True, exist_ok=True)
    wanted = {f"{DIV2K_SUBDIR}/{n}" for n in DIV2K_NAMES}
    with tempfile.TemporaryDirectory(prefix=".gilab-download-", dir=top) as tmp:
        archive = _retrieve(DIV2K_URL, Path(tmp), "DIV2K_valid_LR_bicubic_X2.zip", f"sha256:{DIV2K_SHA256}")
        new = {}
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = str(PurePosixPath(info.filename))
                if name in wanted:
                    new[name] = _store(top / name, zf.read(info))
    _write_manifest(top, new)


def div2k_valid_x2(root=None, download: bool | None = None) -> list[Path]:
    """DIV2K validation images downscaled x2 (MATLAB bicubic): 100 PNGs, 0801x2 .. 0900x2, about 1020x680.

    Args:
        root: data folder holding ``div2k_valid_x2/``; default ``$GILAB_DATA``, else ``pooch.os_cache("gilab")``.
        download: fetch the ETH Zurich archive (118 MB, sha256-pinned) if files are missing (True), or not
            (False); None: only if ``GILAB_DOWNLOAD=1``. Research use only (see the DIV2K page).

    Returns:
        The 100 sorted paths, checked against ``div2k_valid_x2/SHA256SUMS`` (written when the verified archive
        was extracted) where that file lists them.
    """
    return _resolve(_div2k_set(), root, download, _fetch_div2k)


# --- the CLI's entry point ---------------------------------------------------------------------------------------

def download(name: str, root=None) -> list[Path]:
    """Download (if needed) and verify a data set: "kodak", "bsds500" (all splits) or "div2k_valid_x2".

    Returns the verified paths. This is what ``gilab download NAME [--root DIR]`` runs.
    """
    if name == "kodak":
        return kodak(root, download=True)
    if name == "bsds500":
        return [p for split in BSDS500_SPLITS for p in bsds500(split, root, download=True)]
    if name == "div2k_valid_x2":
        return div2k_valid_x2(root, download=True)
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
