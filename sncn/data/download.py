"""Download, checksum and extraction helpers shared by the dataset modules.

Every download goes to ``<file>.part`` first, is verified against its md5, and only then renamed
into place; an archive is extracted into a temporary sibling folder and renamed into place as a
whole. So a partial or corrupt file is never mistaken for a complete one, and an interrupted run
leaves at most a ``.part`` file (resumed on the next try) or a temporary folder (removed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sncn.utils import progress_bar

_CHUNK = 1 << 20  # bytes per read while hashing or downloading


class ChecksumError(RuntimeError):
    """A downloaded or local file does not have the published md5."""


def md5sum(path: str | os.PathLike) -> str:
    """Return the hex md5 of a file, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        32 lowercase hex digits.
    """
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_url(url: str, start: int = 0) -> tuple[BinaryIO, int | None, bool]:
    """Open ``url`` for reading, asking for the bytes from ``start`` on.

    This is the one function that touches the network; tests replace it.

    Args:
        url: an ``http(s)://`` or ``file://`` URL.
        start: the first byte wanted (a resumed download); 0 for the whole file.

    Returns:
        ``(stream, length, resumed)``: the open response, the number of bytes it will deliver
        (None when unknown), and whether the server honoured ``start`` (HTTP 206). When
        ``resumed`` is False the stream delivers the whole file from byte 0.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "sncn"})
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
    response = urllib.request.urlopen(request, timeout=60)
    status = getattr(response, "status", None)
    length = response.headers.get("Content-Length") if response.headers else None
    return response, int(length) if length else None, start > 0 and status == 206


def _stream_into(url: str, part: Path, progress: bool) -> bool:
    """Append ``url``'s bytes to ``part`` (resuming) or rewrite it; True if it resumed."""
    start = part.stat().st_size if part.exists() else 0
    stream, length, resumed = open_url(url, start)
    with stream:
        mode = "ab" if resumed else "wb"
        done = start if resumed else 0
        total = done + length if length is not None else None
        with (
            open(part, mode) as out,
            progress_bar(
                total,
                progress,
                initial=done,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
            ) as bar,
        ):
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))
    return resumed


def download(url: str, dest: str | os.PathLike, md5: str | None, *, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, verified by md5.

    An existing ``dest`` with the right md5 is kept; one with a wrong md5 is downloaded again. An
    existing ``dest.part`` (an interrupted earlier run) is resumed when the server supports byte
    ranges, else restarted; one that is already complete and correct is just renamed. If a
    resumed file fails the checksum it is deleted and downloaded once more from scratch; if that
    fails too, nothing is left behind and :class:`ChecksumError` is raised.

    Args:
        url: where to fetch from (``http(s)://`` or ``file://``).
        dest: the final file path; its folder is created.
        md5: the published hex md5, or None to skip verification (not recommended).
        progress: show a tqdm bar.

    Returns:
        ``dest`` as a Path.

    Raises:
        ChecksumError: the downloaded bytes do not have the expected md5.
        OSError: the URL could not be fetched (message names the URL and the file).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (md5 is None or md5sum(dest) == md5):
        return dest
    part = dest.with_name(dest.name + ".part")
    if part.is_file() and md5 is not None and md5sum(part) == md5:  # finished, not renamed
        os.replace(part, dest)
        return dest
    for attempt in range(2):
        try:
            resumed = _stream_into(url, part, progress)
        except urllib.error.HTTPError as e:
            if e.code == 416 and attempt == 0:  # range not satisfiable: a bad .part, restart
                part.unlink(missing_ok=True)
                continue
            raise OSError(f"could not download {url} to {part}: {e}") from e
        except OSError as e:
            raise OSError(
                f"could not download {url} to {part}: {e}. Check the network and run again "
                f"(the partial file is kept and resumed), or fetch the file by hand and save it "
                f"as {dest}."
            ) from e
        got = md5sum(part) if md5 is not None else None
        if got == md5:
            os.replace(part, dest)
            return dest
        part.unlink(missing_ok=True)
        if not (resumed and attempt == 0):
            raise ChecksumError(
                f"{url} downloaded to {part} has md5 {got}, expected {md5}; the file was "
                f"deleted. Run again to retry, or fetch it by hand, check `md5sum`, and save it "
                f"as {dest}."
            )
        # A resumed file may carry a bad prefix from an earlier run: start over once.
    raise AssertionError("unreachable")


def _members_under(tar: tarfile.TarFile, top: str) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        if member.name.removeprefix("./").split("/", 1)[0] != top:
            raise ValueError(f"{tar.name}: member {member.name!r} is outside {top}/")
        yield member


def extract_tar(archive: str | os.PathLike, dest_dir: str | os.PathLike, top: str) -> Path:
    """Extract a tar archive whose members all live under ``top/`` into ``dest_dir/top``.

    The archive is unpacked into a temporary folder beside the target and renamed into place,
    so ``dest_dir/top`` either does not exist or is complete. Members are extracted with the
    ``data`` filter (no absolute paths, links out of the tree or device files).

    Args:
        archive: a ``.tar``, ``.tar.gz`` or other format ``tarfile`` reads.
        dest_dir: the folder that will hold ``top``.
        top: the archive's single top-level folder name.

    Returns:
        ``dest_dir/top``.

    Raises:
        ValueError: the archive has a member outside ``top/``, or is not a readable tar (the
            message names the archive and how to obtain it again).
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    target = dest_dir / top
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{top}.extracting-", dir=dest_dir))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, members=_members_under(tar, top), filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(
                f"{archive} is not a complete tar archive ({e}); delete it and download it again."
            ) from e
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / top, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
