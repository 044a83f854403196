"""Outputs own only what melset wrote: exports, pages and pictures never replace or delete
anything else, never write inside a store or a run, and leave nothing behind when stopped."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import copy_tree, melset_cmd, run_melset

pytestmark = pytest.mark.slow  # whole commands on real stores

ODD = "out [1] $HOME x"  # brackets, a dollar and spaces in every output path
FORMATS = ("seed-pickles", "hf", "webdataset")


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under `root`: a file's bytes' digest, None for a folder, the target of a link."""
    found = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            found[rel] = b"->" + os.readlink(p).encode()
        elif p.is_dir():
            found[rel] = None
        else:
            found[rel] = hashlib.sha256(p.read_bytes()).digest()
    return found


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".melset"))


def check_export(to: Path, fmt: str, store: Path) -> None:
    """`to` holds a complete `fmt` export of `store` (the store's ok rows, read back)."""
    from melset.store import Store

    ok = len(Store(store).ok_rows())
    marker = json.loads((to / "melset-export.json").read_text())
    assert marker["format"] == fmt and sum(marker["splits"].values()) == ok
    if fmt == "hf":
        import datasets

        loaded = datasets.load_from_disk(str(to))
        assert sum(len(loaded[s]) for s in loaded) == ok
    elif fmt == "webdataset":
        import tarfile

        names = []
        for shard in sorted(to.glob("*.tar")):
            with tarfile.open(shard) as t:
                names += t.getnames()
        assert len([n for n in names if n.endswith(".npy")]) == ok
    else:
        assert len(list((to / "pickles").iterdir())) == ok


@pytest.mark.parametrize("fmt", FORMATS)
def test_reexport_replaces_only_what_the_earlier_export_wrote(sample_store, tmp_path, fmt):
    to = tmp_path / ODD / "export"
    run_melset("export", sample_store, "--format", fmt, "--to", to)
    earlier = tree(to)
    (to / "analysis.ipynb").write_text('{"cells": []}')
    (to / "results").mkdir()
    (to / "results" / "scores.csv").write_text("a,b\n1,2\n")
    copy_tree(sample_store, to / "my store")
    inner = sorted(p for p in earlier if earlier[p] is None)  # a folder the export wrote (pickles, train, ...)
    if inner:
        (to / inner[0] / "notes [draft].txt").write_text("mine")
    (to / "link").symlink_to(tmp_path)
    mine = tree(to)
    proc = run_melset("export", sample_store, "--format", fmt, "--to", to, check=False)
    refused(proc, str(to), "analysis.ipynb", "results", "my store", "empty --to")
    assert tree(to) == mine
    for extra in ("results", "my store"):
        shutil.rmtree(to / extra)
    (to / "analysis.ipynb").unlink()
    (to / "link").unlink()
    if inner:
        refused(run_melset("export", sample_store, "--format", fmt, "--to", to, check=False), "notes [draft].txt")
        (to / inner[0] / "notes [draft].txt").unlink()
    run_melset("export", sample_store, "--format", fmt, "--to", to)
    check_export(to, fmt, sample_store)
    assert leftovers(to.parent) == []


def _marker_edits(marker: dict) -> list:
    """Markers that must not authorise deleting anything (each as the text written)."""
    older = {k: v for k, v in marker.items() if k not in ("files", "folders")}
    marker = {"files": [], "folders": [], **marker}
    return [
        json.dumps(older),  # an earlier melset's marker: no list of what it wrote
        json.dumps({**marker, "files": [*marker["files"], "../victim.txt"]}),
        json.dumps({**marker, "files": [*marker["files"], "/etc/hostname"]}),
        json.dumps({**marker, "files": [*marker["files"], "a/./b"]}),
        json.dumps({**marker, "files": [*marker["files"], 7]}),
        json.dumps({**marker, "files": "everything"}),
        json.dumps({**marker, "files": [*marker["files"], "notes.txt"], "folders": "x"}),
        json.dumps({**marker, "files": [*marker["files"], "deep/notes.txt"]}),  # its folder is not listed
        json.dumps({**marker, "format": "zip"}),
        json.dumps({**marker, "files": [*marker["files"], "notes.txt"]}),  # well formed, but not as melset wrote it
        json.dumps([marker]),
        "{not json",
        "",
    ]


def test_a_damaged_or_edited_marker_authorises_no_deletion(sample_store, tmp_path):
    to = tmp_path / ODD / "w"
    run_melset("export", sample_store, "--format", "webdataset", "--to", to)
    marker_path = to / "melset-export.json"
    marker = json.loads(marker_path.read_text())
    (to / "notes.txt").write_text("mine")
    (to / "deep").mkdir()
    (to / "deep" / "notes.txt").write_text("mine too")
    (tmp_path / ODD / "victim.txt").write_text("a neighbour")
    for text in _marker_edits(marker):
        marker_path.write_text(text)
        before = tree(tmp_path)
        proc = run_melset("export", sample_store, "--format", "webdataset", "--to", to, check=False, timeout=60)
        refused(proc, str(to))
        assert tree(tmp_path) == before, text
    marker_path.unlink()
    os.mkfifo(marker_path)  # read, it would wait for a writer for ever
    proc = run_melset("export", sample_store, "--format", "webdataset", "--to", to, check=False, timeout=60)
    refused(proc, "FIFO")


def test_nothing_is_written_inside_a_store_or_a_run(sample_store, tmp_path):
    store = copy_tree(sample_store, tmp_path / ODD / "store")
    run = tmp_path / ODD / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # a run as train writes it first: config.json and the weights
    (run / "model.pt").write_bytes(b"weights")
    (tmp_path / ODD / "into store").symlink_to(store)
    before = {"store": tree(store), "run": tree(run)}
    for folder in (store, run, tmp_path / ODD / "into store", store / ".." / "store"):
        for args in (
            ("report", sample_store, "--html", folder / "manifest.json"),
            ("report", sample_store, "--html", folder / "page.html"),
            ("report", sample_store, "--html", folder / "config.json"),
            ("show", sample_store, "--track", "200010", "--png", folder / "labels.png"),
            ("show", sample_store, "--track", "200010", "--png", folder / "sub" / "x.png"),
            ("export", sample_store, "--format", "webdataset", "--to", folder / "w"),
            ("export", sample_store, "--format", "seed-pickles", "--to", folder),
        ):
            refused(run_melset(*args, check=False), "training run" if folder == run else "store")
    assert {"store": tree(store), "run": tree(run)} == before
    assert sorted(p.name for p in (tmp_path / ODD).iterdir()) == ["into store", "run", "store"]


def test_picture_and_page_names(sample_store, tmp_path):
    out = tmp_path / ODD
    out.mkdir()

    def show(png, **kw):
        return run_melset("show", sample_store, "--track", "200010", "--png", png, check=False, timeout=60, **kw)

    for name in ("pic.xyz", "pic.json", "pic.tar.gz"):
        refused(show(out / name), name, ".png")
    for name, magic in (("pic", b"\x89PNG"), ("pic.PNG", b"\x89PNG"), ("pic.svg", b"<?xml"), ("pic.pdf", b"%PDF")):
        assert show(out / name).returncode == 0
        assert (out / name).read_bytes().startswith(magic), name
        assert show(out / name).returncode == 0  # melset's own picture is replaced
    os.mkfifo(out / "fifo.png")
    os.mkfifo(out / "fifo.html")
    (out / "folder.png").mkdir()
    for png, words in ((out / "fifo.png", "FIFO"), (out / "folder.png", "folder"), ("/dev/null", "device")):
        refused(show(png), words)
    (out / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"someone else's picture")
    (out / "notes.html").write_text("<!DOCTYPE html><html><body>my notes</body></html>")
    refused(show(out / "photo.png"), "not drawn by melset")
    # a user's own matplotlib figures, and a file that only names matplotlib, are not melset's
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    fig.gca().plot([1, 2])
    for name in ("mine.png", "mine.pdf"):
        fig.savefig(out / name)
    plt.close(fig)
    (out / "Dockerfile").write_text("FROM python:3.12\nRUN pip install matplotlib\n")
    (out / "elsewhere.png").symlink_to(out / "pic.PNG")  # melset's own picture, through a link
    kept = ("mine.png", "mine.pdf", "Dockerfile", "pic.PNG")
    mine = {n: (out / n).read_bytes() for n in kept}
    for name, words in (
        ("mine.png", "not drawn by melset"),
        ("mine.pdf", "not drawn by melset"),
        ("Dockerfile", "not drawn by melset"),
        ("elsewhere.png", "symbolic link"),
    ):
        refused(show(out / name), words)
    assert {n: (out / n).read_bytes() for n in kept} == mine and (out / "elsewhere.png").is_symlink()
    html = ("report", sample_store, "--html")
    for page, words in (
        (out / "notes.html", "not written by melset"),
        (out / "fifo.html", "FIFO"),
        (out / "folder.png", "folder"),
        ("/dev/null", "device"),
    ):
        refused(run_melset(*html, page, check=False, timeout=60), words)
    run_melset(*html, out / "r.html")
    run_melset(*html, out / "r.html")  # melset's own page is replaced
    assert '<meta name="generator" content="melset">' in (out / "r.html").read_text()
    for target in (out / "fifo.png", out / "photo.png", "/dev/null"):
        refused(run_melset("export", sample_store, "--format", "hf", "--to", target, check=False, timeout=60))
    assert (out / "photo.png").read_bytes().endswith(b"someone else's picture")
    assert "my notes" in (out / "notes.html").read_text()
    assert leftovers(out) == []


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_killed_exports_work_folder_is_cleaned_and_the_earlier_export_put_back(sample_store, tmp_path):
    parent = tmp_path / ODD
    to = parent / "w"
    run_melset("export", sample_store, "--format", "webdataset", "--to", to)
    earlier = tree(to)
    # killed with kill -9 between moving the earlier export aside and renaming the new one in
    work = parent / f".melset-export-{_dead_pid()}-abc123"
    work.mkdir()
    dead = int(work.name.split("-")[2])
    (work / "work.json").write_text(
        json.dumps({"pid": dead, "host": os.uname().nodename, "folder": work.name, "target": "w"})
    )
    to.rename(work / "old")
    (work / "out").mkdir()
    (work / "out" / "half.tar").write_bytes(b"x" * 1000)
    (work / "scratch").mkdir()
    run_melset("export", sample_store, "--format", "webdataset", "--to", parent / "other")
    assert tree(to) == earlier and leftovers(parent) == []
    # one whose process still runs (this one) is left alone
    busy = parent / f".melset-export-{os.getpid()}-abc123"
    busy.mkdir()
    run_melset("export", sample_store, "--format", "webdataset", "--to", to)
    assert leftovers(parent) == [busy.name]


def _progress(parent: Path, stage: int) -> bool:
    """Whether an export into `parent` has reached `stage` in its hidden work folders: 0 one
    exists, 1 it holds a file, 2 it holds several, 3 the export's marker is written."""
    try:
        works = [p for p in parent.iterdir() if p.name.startswith(".melset")]
        files = [f for w in works for f in w.rglob("*") if f.is_file()]
    except OSError:  # a folder went away while looking
        return False
    needed = (works, files, files[1:], [f for f in files if f.name == "melset-export.json"])
    return bool(needed[stage])


@pytest.mark.parametrize("fmt", ["hf", "webdataset"])
def test_export_stopped_at_random_moments_leaves_nothing_behind(sample_store, tmp_path, fmt):
    psutil = pytest.importorskip("psutil")
    if fmt == "hf":
        pytest.importorskip("datasets")
    rng = random.Random(23)
    parent = tmp_path / ODD
    to = parent / "export"
    run_melset("export", sample_store, "--format", fmt, "--to", to)
    env = {**os.environ, "HOME": str(tmp_path / "home")}  # datasets' own cache, if it used one, lands here
    seen = set()
    for _ in range(8):
        sig = rng.choice([signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
        stage = rng.randrange(4)
        proc = subprocess.Popen(
            melset_cmd("export", sample_store, "--format", fmt, "--to", to),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and not _progress(parent, stage) and time.monotonic() < deadline:
            time.sleep(0.002)
        hit = proc.poll() is None
        if hit:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert not psutil.pid_exists(proc.pid) and "Traceback" not in stderr, stderr
        if not hit:
            assert proc.returncode == 0, stderr
        elif sig != signal.SIGKILL:
            seen.add((sig, stage))
            # 0 or killed outright (-sig): the signal came when the export was complete
            assert proc.returncode in (0, 128 + sig, -sig), (sig, stage, proc.returncode, stderr)
            assert leftovers(parent) == [], (sig, stage, stderr)
        # the next export cleans what a kill -9 left, and replaces the earlier export
        run_melset("export", sample_store, "--format", fmt, "--to", to, env=env)
        assert leftovers(parent) == [] and sorted(p.name for p in parent.iterdir()) == ["export"]
        check_export(to, fmt, sample_store)
    assert seen, "no export was stopped by SIGTERM or Ctrl-C: the moments were never reached"
    assert not list((tmp_path / "home").glob("**/*.arrow"))
    mine = [p for p in psutil.process_iter(["cmdline"]) if str(to) in " ".join(p.info["cmdline"] or [])]
    assert mine == []
