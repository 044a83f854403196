"""Headless Chromium for the HTML report tests: install it when absent, render, screenshot.

`make test` (and CI) install Debian's chromium package first (`make system-packages`); where it is
absent and cannot be installed (not root, no apt-get, no network) the tests that need it
skip with the reason.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# hosts the browser itself calls (updates, sign-in, clock) whatever the page holds
BROWSER_OWN = re.compile(r"(^|\.)(google\.com|googleapis\.com|gstatic\.com|gvt1\.com|googleusercontent\.com)$")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _which() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@functools.cache
def chromium() -> str:
    """The chromium executable; installs Debian's package when absent, else skips the test."""
    exe = _which()
    if exe:
        return exe
    why = "needs Chromium (apt-get install chromium)"
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
                if proc.returncode != 0:
                    why += f"; `{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
                    break
        except (OSError, subprocess.TimeoutExpired) as exc:
            why += f"; installing it failed: {exc}"
        exe = _which()
        if exe:
            return exe
    else:
        why += "; it cannot be installed here (no apt-get, or not root)"
    pytest.skip(why)


@dataclass(frozen=True)
class Rendered:
    png: Path
    dom: str
    console: list[str]  # console messages (the report has no scripts: any is an error)
    hosts: set[str]  # hosts the page made requests to (the browser's own services left out)


def render(page: Path, workdir: Path, size: tuple[int, int] = (1200, 2000)) -> Rendered:
    """Load `page` in headless Chromium: screenshot, DOM, console messages and network hosts."""
    exe = chromium()
    workdir.mkdir(parents=True, exist_ok=True)
    png, netlog = workdir / "screenshot.png", workdir / "netlog.json"
    url = page.resolve().as_uri()
    shot = subprocess.run(
        [
            exe,
            *FLAGS,
            f"--user-data-dir={workdir / 'profile'}",
            f"--screenshot={png}",
            f"--window-size={size[0]},{size[1]}",
            "--enable-logging=stderr",
            "--v=0",
            f"--log-net-log={netlog}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert png.exists(), f"chromium wrote no screenshot (exit {shot.returncode}): {shot.stderr[-2000:]}"
    console = [line for line in shot.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    dom = subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={workdir / 'profile2'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    return Rendered(png, dom, console, requested_hosts(netlog))


def requested_hosts(netlog: Path) -> set[str]:
    """Hosts of http(s) URLs in a Chromium net log, less the browser's own services."""
    text = netlog.read_text(errors="replace") if netlog.exists() else ""
    try:
        json.loads(text)
    except ValueError:
        pass  # a log cut short still lists its URLs
    hosts = set(re.findall(r"https?://([A-Za-z0-9.-]+)", text))
    return {h for h in hosts if not BROWSER_OWN.search(h)}


def pixel_spread(png: Path) -> float:
    """Standard deviation of the screenshot's pixels (0 for a blank page)."""
    from PIL import Image

    return float(np.asarray(Image.open(png).convert("L"), dtype=np.float64).std())
