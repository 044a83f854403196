"""Writing a finished local folder to an fsspec URL (``s3://``, ``gs://``, ``az://``, ...), with
the storage's failures turned into sentences.

Object storage has no rename, so a folder is published in steps: its files go first under a
hidden work prefix inside the target (``URL/.melset-upload-<pid>-<random>/``, whose record,
``melset-upload.json``, is written before any data and deleted after all of it), and are then
copied to their final keys. What the files mean (which record says what may be replaced) is
the caller's: this module only moves objects, each call bounded in time.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable

from melset.errors import MetadataError
from melset.location.remote import PROBE_S, _bounded, explain, filesystem

WORK_PREFIX = ".melset-upload-"  # <pid>-<random>: an upload's work prefix inside the target
WORK_RECORD = "melset-upload.json"  # inside a work prefix: written first, removed last
LIST_S = 600.0  # listing the target (an export of FMA full: ~1,000 shards, one page each thousand)


class Remote:
    """A folder URL and its filesystem. Every method raises MetadataError with a sentence
    (``URL: what failed: why``) instead of the storage library's exception."""

    def __init__(self, url: str, options: dict):
        self.url = url.rstrip("/")
        self.fs, path = filesystem(self.url, options)
        self.path = path.rstrip("/")

    def key(self, rel: str) -> str:
        return f"{self.path}/{rel}" if rel else self.path

    def _do(self, what: str, fn, seconds: float | None = PROBE_S):
        try:
            return fn() if seconds is None else _bounded(fn, seconds, what)
        except MetadataError:
            raise
        except FileNotFoundError as exc:
            raise MetadataError(f"{self.url}: {what}: no such bucket or container ({explain(exc, self.url)})") from None
        except Exception as exc:  # the storage's own error, in words
            raise MetadataError(f"{self.url}: {what}: {explain(exc, self.url)}") from None

    def objects(self) -> dict[str, int]:
        """Every object under the folder (hidden ones too): relative name -> size. A missing
        bucket, missing credentials, a refusal or an endpoint that does not answer raises."""
        try:
            found = _bounded(lambda: self.fs.find(self.path, detail=True), LIST_S, "listing it")
        except FileNotFoundError:  # find() of a missing prefix is empty: the bucket is missing
            bucket = self.path.split("/", 1)[0]
            raise MetadataError(
                f"{self.url}: the bucket {bucket} does not exist (or these credentials cannot see it)"
            ) from None
        except Exception as exc:
            raise MetadataError(f"{self.url}: listing it: {explain(exc, self.url)}") from None
        base = self.path + "/"
        return {
            name[len(base) :]: int(info.get("size") or 0)
            for name, info in found.items()
            if name.startswith(base) and info.get("type") != "directory"
        }

    def read(self, rel: str, max_bytes: int) -> bytes:
        def get() -> bytes:
            with self.fs.open(self.key(rel), "rb") as f:
                return f.read(max_bytes + 1)

        return self._do(f"reading {rel}", get)

    def put_bytes(self, rel: str, data: bytes) -> None:
        self._do(f"writing {rel}", lambda: self.fs.pipe_file(self.key(rel), data))

    def put_file(self, local: str, rel: str) -> None:
        # no thread: a large file's multipart upload is bounded by the client's own timeouts
        self._do(f"uploading {rel}", lambda: self.fs.put_file(local, self.key(rel)), None)

    def copy(self, src: str, dst: str) -> None:
        self._do(f"copying {src} to {dst}", lambda: self.fs.copy(self.key(src), self.key(dst)), None)

    def remove(self, rels: Iterable[str]) -> None:
        keys = [self.key(r) for r in rels]
        if keys:
            self._do(f"deleting {len(keys)} object(s)", lambda: self.fs.rm(keys), None)


def new_work_name() -> str:
    return f"{WORK_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def work_names(objects: Iterable[str]) -> list[str]:
    """The work prefixes (their top-level names) among the relative object names."""
    return sorted({rel.split("/", 1)[0] for rel in objects if rel.startswith(WORK_PREFIX) and "/" in rel})


def local_files(folder: str) -> list[str]:
    """Every regular file under `folder`, relative and '/'-joined, sorted."""
    out = []
    for dirpath, _, files in os.walk(folder):
        for name in files:
            out.append(os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/"))
    return sorted(out)


def remove_work(remote: Remote, name: str, objects: Iterable[str]) -> None:
    """Delete a work prefix's objects, its record last: a kill half-way leaves one the next
    upload still recognises (its record), never unrecorded objects it must refuse."""
    record = f"{name}/{WORK_RECORD}"
    rest = [rel for rel in objects if rel.startswith(name + "/") and rel != record]
    remote.remove(rest)
    remote.remove([record])
