"""docs/storage.md's shell blocks run as printed: FMA's zips and checksums in a folder made
from the shipped sample, the S3 commands against moto's server on 127.0.0.1 holding the same
files (`my-bucket`), with its endpoint and keys in the environment as the page says."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLE_AUDIO, SAMPLE_TRACKS, fma_metadata_zip, fma_zip, needs_s3
from test_readme import commands, on_the_sample, shell_blocks

PAGE = ROOT / "docs" / "storage.md"

pytestmark = [pytest.mark.slow, needs_s3]


def _collection(folder) -> None:
    """What the page's commands name, made from the shipped sample."""
    fma_zip(folder / "fma_small.zip")
    fma_metadata_zip(folder / "fma_metadata.zip")
    shutil.copytree(SAMPLE_TRACKS.parent, folder / "fma_metadata")
    shutil.copytree(SAMPLE_AUDIO, folder / "fma_small")
    lines = [
        f"{hashlib.sha1(p.read_bytes()).hexdigest()}  {p.relative_to(SAMPLE_AUDIO).as_posix()}"
        for p in sorted(SAMPLE_AUDIO.rglob("*.mp3"))
    ]
    (folder / "fma_small.sha1").write_text("\n".join(lines) + "\n")


def test_the_pages_commands_run_as_printed(tmp_path, s3):
    _collection(tmp_path)
    s3.upload_folder(str(tmp_path / "fma_small"), "my-bucket", "fma_small")
    s3.upload_folder(str(tmp_path / "fma_metadata"), "my-bucket", "fma_metadata")
    s3.client().upload_file(str(tmp_path / "fma_small.zip"), "my-bucket", "fma_small.zip")
    ran = 0
    for heading, block in shell_blocks(PAGE.read_text()):
        for args in commands(block):
            assert args[0] == "melset", f"{heading}: a command this test cannot run: {args}"
            args = on_the_sample(args)
            proc = subprocess.run(
                [sys.executable, "-m", "melset", *args[1:]], cwd=tmp_path, capture_output=True, text=True,
                env=dict(os.environ), timeout=240,
            )
            assert proc.returncode == 0, f"{heading}: {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
            for option in ("--out", "--to"):
                if option in args:
                    target = args[args.index(option) + 1]
                    assert "://" in target or (tmp_path / target).exists(), f"{' '.join(args)} made no {target}"
            ran += 1
    assert ran >= 4
