"""Zip archives read in place: FMA's ``fma_small.zip`` (bzip2 members), ``fma_metadata.zip``, zip64.

Python's zipfile reads deflate, bzip2 and LZMA members and checks each member's CRC-32. An
archive is opened once per process (its central directory of 100,000 entries takes a while)
and kept open while its size and modification time stay the same; an archive at a URL is read
through fsspec with range requests, so only the members asked for travel.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib

from melset.errors import MetadataError
from melset.location import remote

_OPEN: dict[str, tuple[tuple, zipfile.ZipFile]] = {}  # archive -> (its version, the open archive)


def is_zip(path: str) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def split_url(url: str, option: str = "") -> tuple[str | None, str]:
    """(the folder inside the archive or None, the archive's path or URL) of ``zip://FOLDER::ARCHIVE``,
    or of an archive's own path or URL."""
    if url.startswith("zip://"):
        inner, sep, outer = url[len("zip://") :].partition("::")
        if not sep or not outer:
            where = f"{option} {url}" if option else url
            raise MetadataError(f"{where}: a zip URL names the archive after '::' (zip://FOLDER::ARCHIVE)")
        if not remote.is_url(outer):
            outer = os.path.abspath(outer)
        return inner.strip("/"), outer
    return None, url


def _open(arch: str, options: dict) -> zipfile.ZipFile:
    """The open archive (kept per process), reopened when a local archive changed on disk."""
    # a forked worker must not share the parent's file offset: each process opens its own
    if remote.is_url(arch):
        version: tuple = (os.getpid(),)
    else:
        st = os.stat(arch)
        version = (os.getpid(), st.st_ino, st.st_size, st.st_mtime_ns)
    kept = _OPEN.get(arch)
    if kept is not None and kept[0] == version:
        return kept[1]
    if kept is not None and kept[0][0] == os.getpid():
        kept[1].close()
    f = remote.open_file(arch, options) if remote.is_url(arch) else open(arch, "rb")  # noqa: SIM115 (kept open)
    try:
        zf = zipfile.ZipFile(f)
    except BaseException:
        f.close()
        raise
    _OPEN[arch] = (version, zf)
    return zf


def _names(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [i for i in zf.infolist() if not i.is_dir()]


def root_of(arch: str, inner: str | None, options: dict, option: str) -> str:
    """The folder inside the archive a collection's paths are relative to: `inner` when given
    (checked), else the one top folder every member lies in (FMA's ``fma_small/``), else ""."""
    try:
        zf = _open(arch, options)
    except FileNotFoundError:
        raise MetadataError(f"{option} {arch}: no such zip archive") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise MetadataError(
            f"{option} {arch}: a damaged or truncated zip archive ({exc}); download it again"
        ) from None
    except remote.FetchError as exc:
        raise MetadataError(f"{option} {arch}: {exc}") from None
    except OSError as exc:
        raise MetadataError(f"{option} {arch}: cannot read it ({exc.strerror or exc})") from None
    names = [i.filename for i in _names(zf)]
    if not names:
        raise MetadataError(f"{option} {arch}: the zip archive holds no files")
    unsafe = next((n for n in names if n.startswith("/") or ".." in n.split("/")), None)
    if unsafe is not None:
        raise MetadataError(
            f"{option} {arch}: the zip archive has a member named {unsafe!r}, an absolute or '..' path that "
            "unpacking would put outside its folder; repack it with relative names"
        )
    inner_zips = [n for n in names if n.lower().endswith(".zip")]
    if inner_zips and len(inner_zips) == len(names):
        raise MetadataError(
            f"{option} {arch}: the zip archive holds only other zip archives ({inner_zips[0]}, ...); unpack it "
            "and give the inner archive"
        )
    seen: set[str] = set()
    twice = next((n for n in names if n in seen or seen.add(n)), None)
    if twice is not None:
        raise MetadataError(
            f"{option} {arch}: the zip archive holds two members named {twice}, and unpacking it keeps only one; "
            "repack it with each name once"
        )
    if inner is not None:
        if inner and not any(n.startswith(inner + "/") for n in names):
            raise MetadataError(f"{option} {arch}: the archive has no folder {inner}/")
        return inner
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return tops.pop()
    return ""


def files(arch: str, root: str, options: dict) -> dict[str, str]:
    """Members under `root` that are not hidden: relative path -> "size N crc XXXXXXXX"."""
    zf = _open(arch, options)
    prefix = root + "/" if root else ""
    out = {}
    for info in _names(zf):
        name = info.filename
        if not name.startswith(prefix):
            continue
        rel = name[len(prefix) :]
        if any(part.startswith(".") for part in rel.split("/")) or name.startswith("__MACOSX/"):
            continue
        out[rel] = f"size {info.file_size} crc {info.CRC:08x}"
    return out


def read_member(locator: str, options: dict, max_bytes: int | None = None) -> bytes:
    """The bytes of ``zip://MEMBER::ARCHIVE``, decompressed (FileNotFoundError when the
    archive or the member is not there, FetchError when it cannot be read)."""
    member, arch = split_url(locator)
    try:
        zf = _open(arch, options)
        info = zf.getinfo(member)
    except KeyError:
        raise FileNotFoundError(locator) from None
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise remote.FetchError(f"the zip archive {arch} cannot be read ({exc})") from None
    except OSError as exc:
        raise remote.FetchError(f"cannot read the zip archive {arch}: {(exc.strerror or str(exc)).lower()}") from None
    if info.flag_bits & 0x1:
        raise remote.FetchError("encrypted in the zip archive (password-protected): unpack it with its password")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise remote.FetchError("a symbolic link in the zip archive (not followed): unpack the archive, or store the file")
    if max_bytes is not None and info.file_size > max_bytes:
        return b"\0" * (max_bytes + 1)  # the caller refuses its size; nothing decompressed
    try:
        return zf.read(info)
    except RuntimeError as exc:  # zipfile's word for an encrypted member
        raise remote.FetchError(f"cannot be read from the zip archive: {exc}") from None
    except NotImplementedError as exc:
        raise remote.FetchError(f"the archive's member cannot be decompressed: {exc}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        # a CRC-32 that does not match, a damaged bzip2 or deflate stream
        raise remote.FetchError(f"damaged in the zip archive: {exc}") from None
