"""Where a collection's files live: a local folder, a folder inside a zip archive (FMA's bzip2
zips, read in place), or a folder at any fsspec URL (``s3://``, ``gs://``, ``az://``,
``http(s)://``, ``zip://…::…``).

A `Place` turns a track's path relative to the collection's root (its identity, the same
wherever the collection lives) into a *locator*: the string a worker reads the file by and
tracks.parquet keeps, which ``fsspec.open`` opens as well (a local path, ``zip://MEMBER::ARCHIVE``
or a URL). Storage options (credentials, endpoints) travel beside it to the workers and are
never written anywhere.

    archive.py    zip archives: their top folder, their members' bytes (deflate, bzip2, zip64)
    remote.py     fsspec filesystems, storage options, and their failures as sentences
    checksums.py  sha1sum files (FMA's ``checksums``) and the check of each file's bytes
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace

from melset.errors import MetadataError
from melset.vocab import MISSING
from melset.location import archive, remote
from melset.location.checksums import Checksums, read_checksums
from melset.location.remote import is_url, parse_storage_options

FOLDER, ARCHIVE, URL = "folder", "archive", "url"
# Objects up to this size are read in one request: an FMA clip (30 s, ~1 MB) is read to ~80%
# by the default recipe anyway, and one request costs less than two (its start and its
# ID3v1 tag at the end). Larger ones (whole tracks) are read by ranges.
WHOLE_BELOW = 4 << 20

__all__ = [
    "ARCHIVE",
    "FOLDER",
    "URL",
    "Checksums",
    "Fetch",
    "Place",
    "is_url",
    "open_place",
    "parse_storage_options",
    "read_checksums",
]


@dataclass(frozen=True)
class Place:
    """A collection's root: where its files are, and how a relative path becomes a locator.

    kind: FOLDER (``root`` is an absolute local folder), ARCHIVE (``root`` is the folder inside
    the zip archive ``archive``, "" for its top, ``archive`` a local path or a URL) or URL
    (``root`` is a folder URL without its trailing "/").
    """

    kind: str
    root: str
    archive: str = ""

    @property
    def url(self) -> str:
        """The root as one string (a folder, ``zip://FOLDER::ARCHIVE`` or a URL): what the manifest records."""
        if self.kind == ARCHIVE:
            return f"zip://{self.root}::{self.archive}"
        return self.root

    @property
    def is_local(self) -> bool:
        return self.kind == FOLDER

    def __str__(self) -> str:
        if self.kind == ARCHIVE:
            return f"{self.archive} ({self.root}/)" if self.root else self.archive
        return self.root

    def locator(self, rel: str) -> str:
        """Where the file at `rel` (relative, "/"-separated) is read from."""
        if self.kind == FOLDER:
            return os.path.join(self.root, *rel.split("/"))
        if self.kind == ARCHIVE:
            return f"zip://{self.root + '/' if self.root else ''}{rel}::{self.archive}"
        return f"{self.root}/{rel}"

    def relative(self, locator: str) -> str | None:
        """The path of `locator` relative to the root ("/"-separated), None when outside it."""
        if self.kind == FOLDER:
            if is_url(locator):
                return None
            root = self.root
            inside = os.path.isabs(locator) and locator.startswith(root + os.sep)
            if inside and os.path.normpath(locator) == locator and os.path.normpath(root) == root:
                return locator[len(root) + 1 :].replace(os.sep, "/")  # relpath's answer without its ~15 us a track
            rel = os.path.relpath(locator, root)
            return None if rel == ".." or rel.startswith(".." + os.sep) else rel.replace(os.sep, "/")
        if self.kind == ARCHIVE:
            member, _, outer = locator.partition("::")
            if not member.startswith("zip://") or outer != self.archive:
                return None
            member = member[len("zip://") :]
            prefix = self.root + "/" if self.root else ""
            return member[len(prefix) :] if member.startswith(prefix) else None
        return locator[len(self.root) + 1 :] if locator.startswith(self.root + "/") else None

    def files(self, options: dict | None = None) -> dict[str, str]:
        """Every file under an archive's or a URL's root that is not hidden: relative path -> its
        version in words (size, and CRC-32, ETag or modification time). A local folder is
        walked by the catalog (`melset.catalog.scan_audio`), which looks at each file itself."""
        if self.kind == FOLDER:
            raise ValueError(f"{self.root}: a local folder has no listing here; walk it with scan_audio")
        if self.kind == ARCHIVE:
            return archive.files(self.archive, self.root, options or {})
        return remote.files(self.root, options or {})

    def read(self, rel: str, options: dict | None = None, max_bytes: int | None = None) -> bytes:
        """The bytes of the file at `rel` (FileNotFoundError when it is not there)."""
        return read_bytes(self.locator(rel), options or {}, max_bytes)


def open_place(audio: str | os.PathLike, options: dict | None = None, option: str = "--audio") -> Place:
    """The place `audio` names: a local folder, a local zip archive, a folder URL or a zip at a URL.

    A zip archive whose every member lies in one top folder (FMA's ``fma_small/``) has that
    folder as its root. Raises MetadataError (no such folder, archive or URL; not readable),
    MissingDependency (no backend for the URL's scheme) or UsageError (bad storage options),
    each one sentence naming `option`; a URL is probed within bounded time.
    """
    options = options or {}
    text = os.fspath(audio)
    if is_url(text):
        if text.startswith("zip://") or text.lower().rstrip("/").endswith(".zip"):
            inner, arch = archive.split_url(text, option)
            return Place(ARCHIVE, archive.root_of(arch, inner, options, option), arch)
        return Place(URL, remote.probe_folder(text, options, option))
    path = os.path.abspath(text)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MetadataError(f"{option} {text}: no such folder or zip archive") from None
    except OSError as exc:
        raise MetadataError(f"{option} {text}: cannot read it ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        return Place(FOLDER, path)
    if stat.S_ISREG(st.st_mode) and archive.is_zip(path):
        return Place(ARCHIVE, archive.root_of(path, None, options, option), path)
    if stat.S_ISREG(st.st_mode) and path.lower().endswith(".zip"):
        raise MetadataError(
            f"{option} {text}: a damaged or truncated zip archive (its central directory is not there); download it again"
        )
    if stat.S_ISREG(st.st_mode):
        raise MetadataError(
            f"{option} {text}: a file, neither a folder nor a zip archive; give the folder that holds the audio, "
            "or FMA's zip (fma_small.zip)"
        )
    raise MetadataError(f"{option} {text}: not a folder (a pipe, socket or device)")


def size_of(version: str | None) -> int | None:
    """The size in a listing's version ("size N ...")."""
    parts = (version or "").split()
    return int(parts[1]) if len(parts) > 1 and parts[0] == "size" and parts[1].isdigit() else None


def read_bytes(locator: str, options: dict, max_bytes: int | None = None) -> bytes:
    """The bytes at `locator` (a local path, ``zip://MEMBER::ARCHIVE`` or a URL).

    Raises FileNotFoundError when there is no such file, `remote.FetchError` (the reason in
    words) when it cannot be read."""
    if locator.startswith("zip://"):
        return archive.read_member(locator, options, max_bytes)
    if is_url(locator):
        return remote.read(locator, options, max_bytes)
    try:
        with open(locator, "rb") as f:
            return f.read() if max_bytes is None else f.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(locator) from None
    except OSError as exc:
        raise remote.FetchError(f"cannot read the file: {(exc.strerror or str(exc)).lower()}") from None


@dataclass(frozen=True)
class Fetch:
    """A file a worker reads into memory before decoding it (from an archive or a URL, or to
    check its checksum), with what it needs to read it and the SHA-1 it must have."""

    locator: str
    options: dict = field(default_factory=dict, repr=False, compare=False)
    sha1: str | None = None
    checksums: str = ""  # the file that lists `sha1`, for the message
    size: int | None = None  # from the listing, when known: a large object is read by ranges
    data: bytes | None = field(default=None, repr=False, compare=False)  # read ahead by the driver
    problem: str = ""  # why the read ahead failed ("missing" for FileNotFoundError), else ""

    @property
    def prefetchable(self) -> bool:
        """An object at a URL read whole: only waiting (no CPU, unlike an archive's bzip2), so
        the driver can read it ahead while the workers decode."""
        return is_url(self.locator) and not self.locator.startswith("zip://") and not self.ranged

    @property
    def ranged(self) -> bool:
        """Read by range requests, only the bytes the decoders ask for: an object at a URL (not
        an archive's member, whose stream cannot be entered in the middle) larger than
        `WHOLE_BELOW`, without a checksum (which needs every byte)."""
        return (
            self.size is not None
            and self.size > WHOLE_BELOW
            and self.sha1 is None
            and is_url(self.locator)
            and not self.locator.startswith("zip://")
        )

    def __str__(self) -> str:
        return self.locator


MISSING_MARK = MISSING  # a Fetch's problem when the driver found no file


def prefetched(tasks, ahead: int, threads: int = 8, wait_s: float = 10.0):
    """`tasks` ((row, payload) pairs) in order, each `Fetch` of an object at a URL read ahead
    by daemon threads, at most `ahead` at a time: the workers decode while the next files are
    in flight. Other payloads pass through untouched. A read ahead not done after `wait_s`
    (storage that stopped answering) passes its `Fetch` on as it was: the worker reads it
    under the engine's per-file timeout."""
    import queue
    import threading

    items = iter(tasks)
    window: list = []  # [(row, payload, slot)] in order; slot: a one-item queue for the result
    todo: queue.Queue = queue.Queue()

    def reader() -> None:
        while True:
            fetch, slot = todo.get()
            try:
                slot.put(replace(fetch, data=read_bytes(fetch.locator, fetch.options)))
            except FileNotFoundError:
                slot.put(replace(fetch, problem=MISSING_MARK))
            except remote.FetchError as exc:
                slot.put(replace(fetch, problem=str(exc)))
            except Exception:  # anything else: the worker reads it again and says why
                slot.put(fetch)

    started = False

    def fill() -> None:
        nonlocal started
        while len(window) < ahead:
            task = next(items, None)
            if task is None:
                return
            row, payload = task
            slot = None
            if isinstance(payload, Fetch) and payload.prefetchable:
                if not started:
                    for _ in range(threads):
                        threading.Thread(target=reader, daemon=True).start()
                    started = True
                slot = queue.Queue(maxsize=1)
                todo.put((payload, slot))
            window.append((row, payload, slot))

    fill()
    while window:
        row, payload, slot = window.pop(0)
        if slot is not None:
            try:
                payload = slot.get(timeout=wait_s)
            except queue.Empty:
                pass
        yield row, payload
        fill()


def is_archive_name(text: str) -> bool:
    return text.startswith("zip://") or text.lower().rstrip("/").endswith(".zip")


def read_table(spec: str | os.PathLike, options: dict, option: str, name: str, max_bytes: int) -> tuple[str, bytes]:
    """(where it was found, its bytes) of a table a user named by `option`: a file at a URL, or
    the member called `name` in a zip archive (local or at a URL; FMA's ``fma_metadata.zip``
    holds ``fma_metadata/tracks.csv``). A local file that is not an archive is not read here.
    MetadataError names the option and what is wrong."""
    text = os.fspath(spec)
    if is_archive_name(text) or (not is_url(text) and archive.is_zip(text)):
        inner, arch = archive.split_url(text, option)
        if not is_url(arch):
            arch = os.path.abspath(arch)
        try:
            members = archive.files(arch, "", options)
        except FileNotFoundError:
            raise MetadataError(f"{option} {text}: no such zip archive") from None
        except Exception as exc:  # a damaged archive, a storage failure
            why = str(exc) if isinstance(exc, remote.FetchError) else remote.explain(exc, arch)
            raise MetadataError(f"{option} {text}: {why}") from None
        if inner and not inner.endswith("/") and inner in members:
            member = inner
        else:
            found = sorted(m for m in members if m.rsplit("/", 1)[-1] == name and m.startswith(inner or ""))
            if not found:
                raise MetadataError(f"{option} {text}: the archive holds no {name}")
            member = min(found, key=lambda m: m.count("/"))
        locator = f"zip://{member}::{arch}"
    else:
        locator = text
    try:
        data = read_bytes(locator, options, max_bytes)
    except FileNotFoundError:
        raise MetadataError(f"{option} {text}: no such file") from None
    except remote.FetchError as exc:
        raise MetadataError(f"{option} {text}: {exc}") from None
    if len(data) > max_bytes:
        raise MetadataError(f"{option} {text}: more than such a file can hold ({max_bytes} bytes at most)")
    if not data:
        raise MetadataError(f"{option} {text}: an empty file (or a folder); give the {name} itself")
    return locator, data


def sibling(locator: str, name: str) -> str:
    """The locator of the file called `name` in the same folder as `locator`."""
    if locator.startswith("zip://"):
        member, _, outer = locator[len("zip://") :].partition("::")
        folder = member.rsplit("/", 1)[0] + "/" if "/" in member else ""
        return f"zip://{folder}{name}::{outer}"
    if is_url(locator):
        return locator.rsplit("/", 1)[0] + "/" + name
    return os.path.join(os.path.dirname(locator), name)
