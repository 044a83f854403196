"""Attacks on the promise that a command writes only what it owns and replaces only what it
wrote: a user's own matplotlib figure, a file that merely mentions matplotlib, a symbolic link
at the output, an edited export record, and a folder named like an export's work folder."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from conftest import run_melset  # noqa: E402
from melset import export as exports  # noqa: E402
from melset import plots  # noqa: E402
from melset.errors import UsageError  # noqa: E402
from melset.store import Store  # noqa: E402


def _figure():
    fig = plt.figure()
    fig.gca().plot([1, 2, 3])
    return fig


def _users_figure(path: Path) -> bytes:
    """A figure a user drew with matplotlib themselves (matplotlib's own metadata)."""
    fig = _figure()
    fig.savefig(path)
    plt.close(fig)
    return path.read_bytes()


@pytest.mark.parametrize("name", ["mine.png", "mine.pdf", "mine.svg", "mine"])
def test_a_users_own_matplotlib_figure_is_never_replaced(tmp_path, name):
    path = tmp_path / name
    fig = _figure()
    fig.savefig(path, format=os.path.splitext(name)[1][1:] or "png")
    plt.close(fig)
    before = path.read_bytes()
    assert b"atplotlib" in before  # what the old check took for melset's own
    with pytest.raises(UsageError, match="exists and was not drawn by melset; choose another name or move it"):
        plots._save(_figure(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_file_that_mentions_matplotlib_is_never_replaced(tmp_path):
    docker = tmp_path / "Dockerfile"
    docker.write_text("FROM python:3.12\nRUN pip install matplotlib numpy\n")
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"\x89PNG\r\n\x1a\n" + b"tEXtSoftware\x00Matplotlib version3.9 " * 4)
    for path in (docker, notes):
        before = path.read_bytes()
        with pytest.raises(UsageError, match="not drawn by melset"):
            plots._save(_figure(), path)
        assert path.read_bytes() == before


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_a_picture_melset_drew_is_replaced(tmp_path, fmt):
    path = tmp_path / f"pic.{fmt}"
    plots._save(_figure(), path)
    assert plots.drawn_by_melset(str(path))
    first = path.read_bytes()
    fig = _figure()
    fig.gca().plot([3, 1])
    plots._save(fig, path)
    assert path.read_bytes() != first and plots.drawn_by_melset(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_symbolic_link_at_the_output_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.png"
    plots._save(_figure(), victim)  # even a picture melset drew, outside the folder asked
    before = victim.read_bytes()
    asked = tmp_path / "asked"
    asked.mkdir()
    (asked / "pic.png").symlink_to(victim)
    (asked / "dangling.png").symlink_to(elsewhere / "new.png")
    for link in ("pic.png", "dangling.png"):
        with pytest.raises(UsageError, match="symbolic link"):
            plots._save(_figure(), asked / link)
    assert victim.read_bytes() == before
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim.png"]


def test_show_refuses_a_users_figure_with_exit_2(sample_store, tmp_path):
    mine = tmp_path / "mine.pdf"
    fig = _figure()
    fig.savefig(mine)
    plt.close(fig)
    before = mine.read_bytes()
    proc = run_melset("show", sample_store, "--track", "200010", "--png", mine, check=False, timeout=60)
    assert proc.returncode == 2 and "not drawn by melset" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert mine.read_bytes() == before


def test_an_edited_export_record_authorises_no_deletion(sample_store, tmp_path):
    to = tmp_path / "w"
    run_melset("export", sample_store, "--format", "webdataset", "--to", to)
    (to / "notes.txt").write_text("mine")
    marker_path = to / exports.MARKER
    marker = json.loads(marker_path.read_text())
    marker["files"].append("notes.txt")
    marker_path.write_text(json.dumps(marker, indent=2))
    before = {p: p.read_bytes() for p in to.iterdir()}
    proc = run_melset("export", sample_store, "--format", "webdataset", "--to", to, check=False, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "was changed after melset wrote it" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert {p: p.read_bytes() for p in to.iterdir()} == before
    assert (to / "notes.txt").read_text() == "mine"


def test_an_unedited_export_record_still_replaces_the_export(sample_store, tmp_path):
    store = Store(sample_store)
    to = tmp_path / "w"
    exports.webdataset(store, to)
    marker = json.loads((to / exports.MARKER).read_text())
    assert marker["checksum"]
    exports.webdataset(store, to)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_folder_named_like_a_work_folder_is_not_deleted(sample_store, tmp_path):
    store = Store(sample_store)
    dead = _dead_pid()
    backup = tmp_path / f".melset-export-{dead}-backup"  # a user's own folder, by its name alone
    backup.mkdir()
    (backup / "data.txt").write_text("the user's data")
    forged = tmp_path / f".melset-export-{dead}-forged"  # a work.json that names another folder
    forged.mkdir()
    (forged / "work.json").write_text(
        json.dumps({"pid": dead, "host": platform.node(), "folder": backup.name, "target": "w"})
    )
    (forged / "data.txt").write_text("mine too")
    other = tmp_path / f".melset-export-{dead}-elsewhere"  # a work folder of another machine
    other.mkdir()
    (other / "work.json").write_text(
        json.dumps({"pid": dead, "host": platform.node() + "-other", "folder": other.name, "target": "w"})
    )
    killed = tmp_path / f".melset-export-{dead}-abc123"  # a killed export's own
    killed.mkdir()
    (killed / "work.json").write_text(
        json.dumps({"pid": dead, "host": platform.node(), "folder": killed.name, "target": "w"})
    )
    (killed / "out").mkdir()
    (killed / "out" / "half.tar").write_bytes(b"x" * 100)
    unborn = tmp_path / f".melset-export-{dead}-unborn"  # killed before its work.json was written
    unborn.mkdir()
    exports.webdataset(store, tmp_path / "w")
    assert (backup / "data.txt").read_text() == "the user's data"
    assert (forged / "data.txt").read_text() == "mine too"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["w", backup.name, forged.name, other.name])
