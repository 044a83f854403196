"""The export folder: what `--to` may be, the sealed record of every file an export wrote,
the hidden work folder an export is built in (removed on Ctrl-C and SIGTERM, recognised and
removed after a kill -9 by the next export), and the swap that puts a finished export in place.
An export replaces only what its earlier record lists; anything else in the folder is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator

from melset.card import source_root
from melset.errors import MelsetError, UsageError
from melset.location.remote import is_url
from melset.location.upload import WORK_RECORD as UPLOAD_RECORD
from melset.location.upload import Remote, local_files, new_work_name, remove_work, work_names
from melset.location.upload import WORK_PREFIX as UPLOAD_PREFIX
from melset.outputs import leftover_pid, pid_gone, refuse_inside_melset, signals_held, what_is
from melset.store import Store
from melset.store.format import CHECKSUM, _manifest_digest, _sealed

SEED_PICKLES, HF, WEBDATASET = "seed-pickles", "hf", "webdataset"
FORMATS = (SEED_PICKLES, HF, WEBDATASET)
MARKER = "melset-export.json"  # names the format, the store and every file an export folder holds
MARKER_MAX_BYTES = 256 * 2**20
WROTE_FOLDERS, WROTE_FILES = "folders", "files"  # the marker's lists of what the export wrote
WORK_PREFIX = ".melset-export-"  # <pid>-<random>: an export's work folder beside --to
WORK_RECORD, OUT, OLD, SCRATCH = "work.json", "out", "old", "scratch"  # inside a work folder


def prepare_target(to: str | os.PathLike, fmt: str, store: Store | None = None) -> str:
    """The resolved --to folder (symbolic links and '..'), checked: new, empty, or an earlier
    export of the same format that holds nothing but what that export wrote.

    Raises UsageError for a file or a special file, a place inside a store or a training run
    (`store` or any other), another format's export, a folder holding anything that is not its
    earlier export's (nothing is deleted that melset did not write), or a marker that cannot
    be trusted to say what the earlier export wrote.
    """
    given = os.fspath(to)
    to = os.path.realpath(given)
    if store is not None and (to + os.sep).startswith(os.path.realpath(store.root) + os.sep):
        raise UsageError(f"--to {given} is inside the store {store.root}; export to a folder outside it")
    refuse_inside_melset(to, "--to", given, itself=True)
    try:
        mode = os.stat(to).st_mode
    except FileNotFoundError:
        return to
    if not stat.S_ISDIR(mode):
        raise UsageError(f"--to {given} is {what_is(mode)}; give a folder (new or empty) for the {fmt} export")
    if os.listdir(to):
        _check_earlier_export(to, fmt, given)
    return to


def _check_earlier_export(folder: str, fmt: str, given: str) -> None:
    """Refuse (UsageError) `folder` unless it holds a `fmt` export and nothing else."""
    marker = _read_marker(folder, given)
    found = marker["format"]
    if found != fmt:
        raise UsageError(
            f"--to {given} holds a {found} export; choose another folder for the {fmt} export (nothing there was changed)"
        )
    foreign = _foreign_entries(folder, marker)
    if foreign:
        names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UsageError(
            f"--to {given} holds an earlier {fmt} export and also {names}, which that export did not write; "
            "choose an empty --to or move them out (nothing there was changed)"
        )


def _untrusted(given: str, why: str) -> UsageError:
    return UsageError(
        f"--to {given} holds a {MARKER} that cannot say what melset wrote there ({why}); "
        "choose an empty --to, or remove that folder's contents yourself (nothing there was changed)"
    )


def _read_marker(folder: str, given: str) -> dict:
    """The earlier export's marker, checked to be one melset wrote: a regular file of bounded
    size, a JSON object sealed with the checksum melset wrote over its other fields, naming a known format and every file and folder it wrote as a plain
    relative name. Anything else is not trusted to say what may be replaced."""
    path = os.path.join(folder, MARKER)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UsageError(
            f"--to {given} is not empty and holds no melset export; choose a new or empty folder (nothing there was changed)"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise _untrusted(given, f"it is {what_is(st.st_mode)}")
    if st.st_size > MARKER_MAX_BYTES:
        raise _untrusted(given, f"{st.st_size:,} bytes")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise _untrusted(given, f"not JSON: {exc}") from None
    return _trusted_marker(raw, given, path)


def _trusted_marker(raw: bytes, given: str, path: str) -> dict:
    """A marker's bytes as the dict melset sealed, checked (see `_read_marker`), else UsageError."""

    def untrusted(why: str) -> UsageError:
        return _untrusted(given, why)

    try:
        marker = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise untrusted(f"not JSON: {exc}") from None
    if not isinstance(marker, dict) or marker.get(CHECKSUM) != _manifest_digest(marker):
        raise UsageError(
            f"--to {given}: {path} was changed after melset wrote it, so melset will not delete anything there; "
            "choose an empty --to or move the folder away (nothing there was changed)"
        )
    if marker.get("format") not in FORMATS:
        raise untrusted("it names no export format")
    files, folders = marker.get(WROTE_FILES), marker.get(WROTE_FOLDERS)
    if not (isinstance(files, list) and isinstance(folders, list)):
        raise untrusted("it lists no files: an export by an older melset")
    names = [*folders, *files]
    bad = next((n for n in names if not _plain_relative(n)), None)
    if bad is not None:
        raise untrusted(f"{bad!r} is not a plain relative name")
    dirs = set(folders)
    if len(set(names)) != len(names) or MARKER in files or any(_parent(n) and _parent(n) not in dirs for n in names):
        raise untrusted("its list of files is inconsistent")
    return marker


def _plain_relative(name) -> bool:
    if not isinstance(name, str) or not name or "\0" in name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _parent(name: str) -> str:
    return name.rpartition("/")[0]


def _walk(folder: str, known_folders: set[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(folders, regular files, anything else) under `folder` as relative '/'-joined names,
    symbolic links not followed; with `known_folders`, folders outside it are not entered."""
    folders, files, others = [], [], []
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(os.path.join(folder, rel) if rel else folder) as it:
            for entry in it:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    folders.append(name)
                    if known_folders is None or name in known_folders:
                        pending.append(name)
                elif entry.is_file(follow_symlinks=False):
                    files.append(name)
                else:
                    others.append(name)
    return sorted(folders), sorted(files), sorted(others)


def _foreign_entries(folder: str, marker: dict) -> list[str]:
    """What `folder` holds that the export its marker describes did not write."""
    known_folders, known_files = set(marker[WROTE_FOLDERS]), {*marker[WROTE_FILES], MARKER}
    folders, files, others = _walk(folder, known_folders)
    return sorted([n for n in folders if n not in known_folders] + [n for n in files if n not in known_files] + others)


def _leftovers(parent: str) -> None:
    """Remove the work folders that killed exports left in `parent`; an earlier export one of
    them had moved aside is put back first. A folder is one only when its name is a work
    folder's, it holds a work.json that names that very folder, this machine and a pid that
    no longer runs (the pid in the name); anything else is a user's and is left alone (a
    folder killed before its work.json was written is removed only while it is empty)."""
    for name in os.listdir(parent):
        pid = leftover_pid(name, WORK_PREFIX)
        path = os.path.join(parent, name)
        if pid is None or not pid_gone(pid) or not stat.S_ISDIR(os.lstat(path).st_mode):
            continue
        record = _work_record(path)
        if record is None:
            with contextlib.suppress(OSError):
                _remove_unborn(path)
            continue
        if record.get("folder") != name or record.get("pid") != pid or record.get("host") != platform.node():
            continue  # another machine's, on a shared folder, or not a work folder at all
        target = record.get("target")
        old = os.path.join(path, OLD)
        if os.path.isdir(old):
            if not (isinstance(target, str) and _plain_relative(target) and "/" not in target):
                continue  # an earlier export whose place is unknown: never deleted
            if not os.path.lexists(os.path.join(parent, target)):
                os.rename(old, os.path.join(parent, target))
        _rmtree_record_last(path)


def _remove_unborn(path: str) -> None:
    """Remove a work folder killed before its work.json was written: only while it holds
    nothing, or nothing but an empty work.json (opened, not yet written)."""
    entries = os.listdir(path)
    if entries == [WORK_RECORD]:
        record_path = os.path.join(path, WORK_RECORD)
        st = os.lstat(record_path)
        if not (stat.S_ISREG(st.st_mode) and st.st_size == 0):
            return
        os.remove(record_path)
    elif entries:
        return
    os.rmdir(path)


def _work_record(path: str) -> dict | None:
    """The work.json of a work folder: a small regular file holding a JSON object, else None."""
    record_path = os.path.join(path, WORK_RECORD)
    try:
        st = os.lstat(record_path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 65536:
            return None
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _swap_in(work: str, to: str, fmt: str) -> None:
    """Replace the folder `to` (an earlier `fmt` export, or empty) by the finished export in
    `work`/out. The earlier one is moved into `work` and checked again there (nothing can be
    added to it any more) before the new one takes its place; a folder that gained foreign
    entries meanwhile is put back and refused."""
    old = os.path.join(work, OLD)
    with signals_held():
        if os.path.isdir(to):
            os.rename(to, old)
            try:
                if os.listdir(old):
                    _check_earlier_export(old, fmt, to)
            except BaseException:
                os.rename(old, to)
                raise
        os.rename(os.path.join(work, OUT), to)


def _remove_work(work: str, to: str) -> None:
    """Remove a work folder; an earlier export moved into it whose place is empty goes back.
    Done even when Ctrl-C or SIGTERM (already on its way) interrupts it: raised after."""
    stopped = None
    for _ in range(3):  # Ctrl-C and SIGTERM, each already on its way, can cut it short once
        try:
            with signals_held():
                # a Ctrl-C as the handlers come back cuts a finished removal short: nothing left to do
                if not os.path.lexists(work):
                    break
                old = os.path.join(work, OLD)
                if os.path.isdir(old) and not os.path.lexists(to):
                    os.rename(old, to)
                _rmtree_record_last(work)
            break
        except KeyboardInterrupt as exc:
            stopped = stopped or exc
    if stopped:
        raise stopped


def _rmtree_record_last(work: str) -> None:
    """Remove a work folder with its work.json last: a kill -9 half-way leaves a folder the next
    export still recognises (its record), or an empty one, never one it must leave alone."""
    for name in os.listdir(work):
        if name != WORK_RECORD:
            path = os.path.join(work, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
    with contextlib.suppress(OSError):
        os.remove(os.path.join(work, WORK_RECORD))
    with contextlib.suppress(OSError):
        os.rmdir(work)


@contextlib.contextmanager
def _export_folder(store: Store, to: str | os.PathLike, fmt: str, options: dict | None = None) -> Iterator[str]:
    """A folder to write a `fmt` export into (checked by `prepare_target`): `out` inside a
    hidden work folder beside `to`, named for this process. It replaces `to` when the block
    ends without error; the work folder is removed in any case (Ctrl-C and SIGTERM included),
    and the next export into the same place removes one left by a process killed outright.
    A URL `to` (fsspec `options`) gets the export built in a local temporary folder, then
    uploaded (`_remote_export`)."""
    if is_url(os.fspath(to)):
        with _remote_export(os.fspath(to), fmt, options or {}) as local, _export_folder(store, local, fmt) as out:
            yield out
        return
    to = prepare_target(to, fmt, store)
    parent = os.path.dirname(to)
    if os.path.isdir(parent):
        _leftovers(parent)  # may put back an earlier export at `to`: checked again before it is replaced
    os.makedirs(parent, exist_ok=True)
    work = ""
    try:
        with signals_held():  # a signal during mkdtemp would leave the folder unnamed here
            work = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=parent)
        record = {
            "pid": os.getpid(),
            "host": platform.node(),
            "folder": os.path.basename(work),  # a leftover is removed only when its record names it
            "target": os.path.basename(to),
            "format": fmt,
        }
        with open(os.path.join(work, WORK_RECORD), "w", encoding="utf-8") as f:
            f.write(json.dumps(record))
        out = os.path.join(work, OUT)
        os.mkdir(out)
        yield out
        _swap_in(work, to, fmt)
    finally:
        if work:
            _remove_work(work, to)


@contextlib.contextmanager
def _scratch(out: str) -> Iterator[str]:
    """A scratch folder inside the work folder of the export being written to `out`
    (removed with it, whatever happens)."""
    path = os.path.join(os.path.dirname(out), SCRATCH)
    os.mkdir(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_marker(folder: str, store: Store, fmt: str, counts: dict[str, int], extra: dict | None = None) -> None:
    """DIR/melset-export.json: the format, the store, what was written per split, and every
    folder and file the export wrote (all that a later export into DIR may replace), sealed
    with a checksum over the rest (as a store's manifest.json): an edited marker authorises nothing."""
    folders, files, _ = _walk(folder)
    obj = {
        "format": fmt,
        "store": store.root,
        "store_id": store.manifest.get("store_id"),
        "source_root": source_root(store),  # the tracks' paths are relative to it
        "labels": store.label_kind,
        "classes": list(store.classes),
        "splits": counts,
        **(extra or {}),
        WROTE_FOLDERS: folders,
        WROTE_FILES: [n for n in files if n != MARKER],
    }
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as f:
        f.write(json.dumps(_sealed(obj), indent=2, ensure_ascii=False) + "\n")


# -- Hugging Face datasets --------------------------------------------------------------------------


# -- exports to object storage ------------------------------------------------------------------------
#
# URL/.melset-upload-<pid>-<random>/ holds an upload in progress: its melset-upload.json (sealed,
# written before any data, deleted after all of it) names the files it will place and the ones
# of the earlier export it replaces, so that an upload killed at any moment leaves a target the
# next export still knows to be melset's. The files are copied to their final keys once all are
# up, after the earlier record is deleted; the new melset-export.json is written last.

UPLOAD_STALE_S = 86400.0  # another machine's upload this old is taken for one that was killed
PLACING, REPLACING = "placing", "replacing"  # a work record's lists


def _work_record_of(remote: Remote, name: str, objects: dict[str, int], fmt: str, given: str) -> dict | None:
    """The sealed work record of the work prefix `name`, checked; None when it is not melset's
    (its objects are then refused as anything else melset did not write). UsageError when it
    belongs to an upload that may still be running."""
    rel = f"{name}/{UPLOAD_RECORD}"
    if not 0 < objects.get(rel, 0) <= MARKER_MAX_BYTES:
        return None
    try:
        record = json.loads(remote.read(rel, MARKER_MAX_BYTES).decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get(CHECKSUM) != _manifest_digest(record):
        return None
    names = [*(record.get(PLACING) or [None]), *(record.get(REPLACING) or [])]
    if record.get("folder") != name or record.get("pid") != leftover_pid(name, UPLOAD_PREFIX):
        return None
    if record.get("format") not in FORMATS or not all(_plain_relative(n) for n in names):
        return None
    pid, host = record["pid"], record.get("host")
    if host == platform.node() and not pid_gone(pid):
        raise UsageError(
            f"--to {given}: another melset export to it is under way (pid {pid}); wait for it to end (nothing there was changed)"
        )
    started = record.get("started")
    if host != platform.node() and isinstance(started, (int, float)) and time.time() - started < UPLOAD_STALE_S:
        raise UsageError(
            f"--to {given}: an export from {host} (pid {pid}) is uploading there or was killed; if it no longer "
            f"runs, delete {given}/{name}/ and export again (nothing there was changed)"
        )
    return record


def _remote_plan(remote: Remote, fmt: str, given: str, own: str = "") -> dict:
    """What the target holds, checked: nothing, or an earlier `fmt` export (with the work
    prefixes of killed uploads to it) and nothing else. Returns the objects, the earlier
    export's files (to replace) and the work prefixes to remove once the new export is in place."""
    objects = remote.objects()
    marker = None
    if MARKER in objects:
        if objects[MARKER] > MARKER_MAX_BYTES:
            raise _untrusted(given, f"{objects[MARKER]:,} bytes")
        marker = _trusted_marker(remote.read(MARKER, MARKER_MAX_BYTES), given, f"{given}/{MARKER}")
        if marker["format"] != fmt:
            raise UsageError(
                f"--to {given} holds a {marker['format']} export; choose another place for the {fmt} export "
                "(nothing there was changed)"
            )
    known = set(marker[WROTE_FILES]) if marker else set()
    folders = set(marker[WROTE_FOLDERS]) if marker else set()
    leftovers = []
    for name in work_names(objects):
        if name == own:
            continue
        record = _work_record_of(remote, name, objects, fmt, given)
        if record is not None:
            leftovers.append(name)
            if record["format"] == fmt:
                known.update(record[PLACING], record.get(REPLACING) or [])
    ours = (own, *leftovers)
    foreign = sorted(
        rel
        for rel in objects
        if rel != MARKER
        and rel not in known
        and rel.split("/", 1)[0] not in ours
        and not (rel.endswith("/") and rel.rstrip("/") in folders)
    )
    if foreign and marker is None and not leftovers:
        raise UsageError(
            f"--to {given} is not empty and holds no melset export; choose a new or empty place (nothing there was changed)"
        )
    if foreign:
        names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UsageError(
            f"--to {given} holds an earlier {fmt} export and also {names}, which no melset export wrote; "
            "choose an empty --to or move them out (nothing there was changed)"
        )
    return {"objects": objects, "old": sorted(known & set(objects)), "leftovers": leftovers, "marker": marker}


def _publish(remote: Remote, local: str, fmt: str, plan: dict, given: str) -> None:
    """Upload the finished export in `local` under a work prefix, then put it in place: the
    earlier record deleted, the files copied to their final keys, the earlier export's other
    files deleted, the new record written last, the work prefixes removed."""
    files = [f for f in local_files(local) if f != MARKER]
    work = new_work_name()
    record = {
        "pid": os.getpid(),
        "host": platform.node(),
        "folder": work,
        "format": fmt,
        "started": time.time(),
        PLACING: files,
        REPLACING: plan["old"],
    }
    written = False
    try:
        with signals_held():  # the record goes up whole, or the prefix does not exist
            remote.put_bytes(f"{work}/{UPLOAD_RECORD}", json.dumps(_sealed(record)).encode())
            written = True
        for f in files:
            remote.put_file(os.path.join(local, f), f"{work}/{f}")
        with signals_held():  # from here the target changes: done whole (each step bounded)
            now = _remote_plan(remote, fmt, given, own=work)  # nothing foreign arrived meanwhile
            if MARKER in now["objects"]:
                remote.remove([MARKER])
            for f in files:
                remote.copy(f"{work}/{f}", f)
            remote.remove(sorted(set(now["old"]) - set(files)))
            remote.put_file(os.path.join(local, MARKER), MARKER)
            for name in now["leftovers"]:
                remove_work(remote, name, now["objects"])
    finally:
        if written:
            with signals_held(), contextlib.suppress(MelsetError):  # where possible: the next export cleans
                remove_work(remote, work, [f"{work}/{f}" for f in files] + [f"{work}/{UPLOAD_RECORD}"])


@contextlib.contextmanager
def _remote_export(url: str, fmt: str, options: dict) -> Iterator[str]:
    """A local folder path to build the export in (it does not exist yet), published to `url`
    when the block ends without error. The target is checked before anything is built."""
    remote = Remote(url, options)
    plan = _remote_plan(remote, fmt, url)
    parent = tempfile.mkdtemp(prefix="melset-upload-")
    try:
        local = os.path.join(parent, "export")
        yield local
        _publish(remote, local, fmt, plan, url)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
