"""Small file helpers every part of gilab shares: atomic writes, image folders, shards.

    with atomic_path("out/gaussians.safetensors") as tmp:   # write to ``tmp``; it replaces the file on success
        save_file(tensors, tmp)
    write_atomic("out/summary.json", text)                   # bytes or str
    list_images("photos/")                                   # sorted image files
    parse_shard("1/4")                                       # (1, 4)
    figures_dir()                                            # the repository's figures/ (committed results)

An atomic write goes to a uniquely named temporary file in the destination's folder and is renamed over the
destination only once complete, so a reader (or a crash, Ctrl-C, kill -9) never leaves half a file, and two
writers to the same path never share a temporary. The file gets the usual mode (0666 less the umask), not the
0600 that :func:`tempfile.mkstemp` gives.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import GilabError

#: Suffixes taken for images when a folder is listed (Pillow reads more; these are the ones people use).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed.

    Missing parent folders are created. ``mode`` (less the umask) is the final file's permission.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (the order every shard and rank agrees on)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GilabError(f"{folder}: no such image folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def parse_shard(text: str | None) -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n. None: this process's torchrun rank and world size, or (0, 1)."""
    if text is None:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise GilabError(f"shard must be i/n with 0 <= i < n, got {text!r}")
    return i, n


def distributed_shard(index: int, count: int) -> tuple[int, int]:
    """Under torchrun (WORLD_SIZE > 1) each rank takes its own share of shard ``index`` of ``count``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return index * world + int(os.environ.get("RANK", "0")), count * world
    return index, count


def figures_dir(required: str = "README.md") -> Path:
    """The repository's ``figures/`` folder (committed results the notebooks read): in the working directory or one
    above it, or beside the gilab package (an editable install); the first that holds ``required``.

    Raises:
        GilabError: no such folder (gilab installed from a wheel, which ships no figures).
    """
    package_root = Path(__file__).resolve().parents[1]
    for root in [Path.cwd(), *Path.cwd().parents, package_root]:
        if (root / "figures" / required).is_file():
            return root / "figures"
    raise GilabError(f"no figures/ folder with {required}: open the notebooks in a checkout of the gilab repository")
