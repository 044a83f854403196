"""A newcomer's first hour (issue 24): tracks of other subsets named, refusals that name the
option that changed, progress in a log file and an honest bar on a terminal, and an install
that fits the job."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from conftest import (
    MINI_AUDIO,
    MINI_TRACKS,
    ROOT,
    SAMPLE_AUDIO,
    SAMPLE_TRACKS,
    fault_env,
    melset_cmd,
    needs_shared,
    run_melset,
)

PROGRESS = re.compile(
    r"^extract (\d+)/(\d+) \(\d+%\), (-|[\d.]+) clips/s, \d+:\d\d:\d\d elapsed, eta (-:--:--|\d+:\d\d:\d\d)$"
)
SUMMARY_RATE = re.compile(r"processed in [\d.]+ s, ([\d.]+) clips/s")


def _sample(out, *extra) -> list:
    return ["extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, *extra]


# -- tracks of other subsets on disk ------------------------------------------------------------


@needs_shared
def test_catalog_counts_tracks_of_other_subsets_on_disk():
    from melset.catalog import open_catalog

    small = open_catalog(MINI_AUDIO, tracks=MINI_TRACKS)
    assert small.source["other_subsets_on_disk"] == {"medium": 9, "large": 2}
    assert small.unlisted == ["299/299999.mp3"]  # listed tracks of other subsets are not unlisted
    assert open_catalog(MINI_AUDIO, tracks=MINI_TRACKS, subset="medium").source["other_subsets_on_disk"] == {"large": 2}
    assert open_catalog(MINI_AUDIO, tracks=MINI_TRACKS, subset="large").source["other_subsets_on_disk"] == {}


@pytest.mark.slow
def test_summary_names_the_tracks_of_other_subsets_and_the_subset_that_includes_them(tmp_path):
    proc = run_melset(*_sample(tmp_path / "s", "--workers", "2"))
    assert (
        "other subsets: 5 tracks of other subsets (medium 5) are on disk and not in this store: "
        "--subset medium includes them"
    ) in proc.stdout
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["source"]["other_subsets_on_disk"] == {"medium": 5}
    assert manifest["unlisted_count"] == 1
    everything = run_melset(*_sample(tmp_path / "all", "--workers", "2", "--subset", "large"))
    assert "other subsets" not in everything.stdout


# -- a refusal names the option that changed, before any progress is drawn ---------------------


@pytest.mark.slow
def test_another_subset_on_an_existing_store_is_refused_naming_subset_before_any_progress(tmp_path):
    out = tmp_path / "s"
    run_melset(*_sample(out, "--workers", "2"))
    before = (out / "manifest.json").read_bytes()
    proc = run_melset(*_sample(out, "--workers", "2", "--subset", "large"), check=False)
    assert proc.returncode == 2, proc.stderr
    assert (
        f"{out} holds a store made with --subset small (10 tracks); this run asks --subset large (16 tracks): "
        "run with --subset small to resume it, --overwrite to replace it, or choose another --out"
    ) in proc.stderr
    assert proc.stderr.count("\n") == 1 and "clips/s" not in proc.stderr and "0/16" not in proc.stderr
    assert (out / "manifest.json").read_bytes() == before

    proc = run_melset(*_sample(out, "--workers", "2", "--limit", "3"), check=False)
    assert proc.returncode == 2
    assert "made with no --limit (10 tracks); this run asks --limit 3 (3 tracks): run without --limit" in proc.stderr
    proc = run_melset(*_sample(out, "--workers", "2", "--dtype", "float32", "--fmax", "8000"), check=False)
    assert proc.returncode == 2
    assert (
        "made with --fmax none --dtype float16; this run asks --fmax 8000 --dtype float32: "
        "run with --fmax none --dtype float16 to resume it"
    ) in proc.stderr


# -- progress in a log file ------------------------------------------------------------------


@pytest.mark.slow
def test_a_log_file_gains_progress_lines_while_extract_runs(tmp_path):
    log = tmp_path / "log"
    cmd = melset_cmd(*_sample(tmp_path / "s", "--subset", "large", "--workers", "1"))
    started = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=fault_env("slow:0.6"))
    try:
        seen: list[str] = []
        while proc.poll() is None and len(seen) < 3:
            seen = [line for line in log.read_text().splitlines() if PROGRESS.match(line)]
            time.sleep(0.05)
        assert len(seen) >= 3 and proc.poll() is None, "no progress lines in the log while extract ran"
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - started
    lines = log.read_text().splitlines()
    progress = [PROGRESS.match(line) for line in lines if PROGRESS.match(line)]
    assert progress[0].group(1) == "2" and progress[0].group(3) == "-"  # the two missing rows, nothing processed yet
    assert progress[-1].group(1) == progress[-1].group(2) == "16"
    # every few seconds, not every file: no more often than every 2 s, plus the first and the last
    assert len(progress) <= elapsed / 2 + 2
    assert progress[-1].group(3) == SUMMARY_RATE.search(log.read_text()).group(1)


def test_the_progress_display_and_the_summary_compute_one_rate(tmp_path):
    from melset.catalog import open_catalog
    from melset.cli.extract import Meter
    from melset.engines import make_engine
    from melset.extract import extract
    from melset.recipe import Recipe

    meter = Meter()
    catalog = open_catalog(SAMPLE_AUDIO, tracks=SAMPLE_TRACKS, subset="large")
    with make_engine("local", workers=2) as engine:
        summary = extract(catalog, Recipe(), tmp_path / "s", engine=engine, on_progress=meter.update)
    assert meter.first == 2 and summary.processed == meter.done - meter.first == 14  # the missing rows apart
    # store opening and finishing take no part in either: the two agree to the microsecond
    assert meter.rate() == pytest.approx(summary.rate, rel=1e-3)
    assert summary.work_s < summary.elapsed_s


def test_log_lines_every_few_seconds_or_percent_and_at_least_every_30_seconds():
    from melset.cli.extract import LogLines, Meter

    now = [0.0]
    lines: list[str] = []
    display = LogLines(Meter(clock=lambda: now[0]), lines.append)

    def at(t, done, total=1000):
        now[0] = t
        display(done, total)
        return len(lines)

    assert at(0.0, 100) == 1  # the rows planned
    assert at(1.0, 400) == 1  # 30 % more, but under 2 s later
    assert at(2.0, 400) == 2  # 2 s, 5 % more
    assert lines[-1] == "extract 400/1000 (40%), 150.0 clips/s, 0:00:02 elapsed, eta 0:00:04"
    assert at(10.0, 440) == 2  # 4 % more: not yet
    assert at(12.0, 450) == 3  # 5 %
    assert at(41.0, 451) == 3 and at(42.0, 451) == 4  # nothing for 30 s: a line all the same
    assert at(43.0, 1000) == 5  # the last row, at once
    assert lines[-1] == "extract 1000/1000 (100%), 20.9 clips/s, 0:00:43 elapsed, eta 0:00:00"
    assert at(44.0, 1000) == 5  # once


# -- the bar on a terminal ---------------------------------------------------------------------


def _run_on_terminal(cmd: list, env: dict, timeout: float = 120) -> tuple[int, str, str]:
    """Run cmd with stderr on a pseudo-terminal (stdout a pipe): returns (exit status, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        stdout = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return proc.returncode, stdout.decode(), screen.decode(errors="replace")


@pytest.mark.slow
def test_terminal_bar_shows_the_summarys_rate_without_a_first_frame_spike_and_a_visible_finished_bar(tmp_path):
    env = fault_env("slow:0.5")
    env.update(TERM="xterm", COLUMNS="140")  # a 16-colour terminal
    for name in ("COLORTERM", "NO_COLOR", "FORCE_COLOR"):
        env.pop(name, None)
    code, stdout, screen = _run_on_terminal(
        melset_cmd(*_sample(tmp_path / "s", "--subset", "large", "--workers", "2")), env
    )
    assert code == 0, stdout + screen
    summary_rate = float(SUMMARY_RATE.search(stdout).group(1))
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    rates = [float(r) for r in re.findall(r"([\d.]+) clips/s", plain)]
    assert rates, plain
    assert rates[-1] == summary_rate  # the last frame and the summary agree
    assert max(rates) <= 1.5 * summary_rate + 0.5, rates  # no first-frame spike, no jump for the missing row
    last_frame = screen[screen.rindex("16/16") - 400 :]
    assert "\x1b[32m━" in last_frame  # the finished bar is green, not the grey of its empty part


# -- install that fits the job -----------------------------------------------------------------


def _dry_run(folder: Path, target: str) -> str:
    return subprocess.run(["make", "-n", target], cwd=folder, capture_output=True, text=True, check=True).stdout


def _extras_installed(commands: str) -> list[list[str]]:
    found = re.finditer(r"pip install --quiet -e '?\.(?:\[([^\]]*)\])?'?(?:\s|$)", commands)
    return [m.group(1).split(",") if m.group(1) else [] for m in found]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_no_torch_ray_or_test_tools_and_says_how_to_run_melset(tmp_path):
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements):
        return {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower() for r in requirements}

    heavy = {"torch", "ray", "librosa", "pytest", "datasets", "scikit-learn"}
    assert not names(project["dependencies"]) & heavy  # `pip install melset` pulls none of them
    assert "torch==2.13.0" in extras["train"]

    demo = _dry_run(tmp_path, "demo")
    installs = _extras_installed(demo)
    assert len(installs) == 1, demo
    assert not names(r for extra in installs[0] for r in extras[extra]) & heavy, installs
    assert ".venv/bin/melset --help" in demo and "source .venv/bin/activate" in demo

    # `make test` after `make demo` adds the extras, without building the environment again
    (tmp_path / ".venv").mkdir()
    for line in demo.splitlines():
        if line.startswith("touch .venv/"):
            (tmp_path / line.split()[1]).touch()
    then = _dry_run(tmp_path, "test")
    assert "-m venv" not in then
    added = _extras_installed(then)
    assert len(added) == 1 and {"test", "train", "ray", "av", "hf", "wds"} <= set(added[0]), then
    assert "pytest" in then


@pytest.mark.slow
def test_ray_engine_writes_the_same_progress_lines(tmp_path):
    pytest.importorskip("ray")
    log = tmp_path / "log"
    cmd = melset_cmd(*_sample(tmp_path / "s", "--engine", "ray", "--workers", "1", "--limit", "4"))
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=fault_env("slow:0.5"), timeout=240)
    text = log.read_text()
    assert proc.returncode == 0, text
    progress = [PROGRESS.match(line) for line in text.splitlines() if PROGRESS.match(line)]
    assert len(progress) >= 2 and progress[-1].group(1) == progress[-1].group(2) == "4", text
    assert progress[-1].group(3) == SUMMARY_RATE.search(text).group(1)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
