"""README.md is a front page whose shell blocks run as printed, and the docs hold together.

Every ```sh block of README.md runs here, command by command, against the shipped sample, in
one temporary folder and in the README's order, so a later block uses what an earlier one
made (training uses the FMA block's store). What the README's commands need is put in place
first, as the README says:

- `fma_metadata` and `fma_small` are links to sample/fma_metadata and sample/fma_audio, and
  the FMA block's own comment says what changes on the sample: `--subset small` becomes
  `--subset large` (the sample spans every subset) and `--track 2` / `000002.png` become
  `--track 200010` / `200010.png` (track 2 is listed in the sample without a file);
- `genres/` (GTZAN's layout) holds the sample's eight usable clips, a folder per genre, and
  `my_music/` with `files.csv` lists the same clips;
- `song.mp3` is a link to one of the sample's clips;
- `melset train` gets `--epochs 1` here: the README's default of 60 epochs takes minutes
  even on the sample, and one epoch runs every step of training;
- `melset` and `.venv/bin/melset` run as `python -m melset` with the interpreter running the
  tests (which is the environment `source .venv/bin/activate` would activate, so that line
  is skipped); `make demo` and `make test` are checked with `make -n` (the targets exist and
  parse) and the `melset` lines `make -n demo` prints are run as printed.

A command not in this list fails the test with its name, so a new kind of command in the
README comes with a way to run it here.
"""

from __future__ import annotations

import pickle
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, SAMPLE_AUDIO, SAMPLE_TRACKS

README = ROOT / "README.md"
DOCS = ROOT / "docs"

# the sample's clips that give an ok row
OK_CLIPS = ("200010", "200011", "200023", "200036", "200037", "200047", "200090", "200091")


def sample_genres() -> dict[str, str]:
    """The ok clips' genre_top, from sample/fma_metadata/tracks.csv."""
    import pandas as pd

    genre = pd.read_csv(SAMPLE_TRACKS, index_col=0, header=[0, 1])[("track", "genre_top")]
    return {tid: genre[int(tid)] for tid in OK_CLIPS}


# (option, value in the README, value on the sample), as the FMA block's comment says
ON_THE_SAMPLE = {("--subset", "small"): "large", ("--track", "2"): "200010", ("--png", "000002.png"): "200010.png"}
TRAIN_EPOCHS = ["--epochs", "1"]
# options whose value is a path the command must leave behind
MADE = ("--out", "--png", "--to", "--html", "--run")


def shell_blocks(text: str) -> list[tuple[str, str]]:
    """(the `## ` heading above it, the block's text) for every ```sh block, in order."""
    blocks = []
    for m in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
        headings = re.findall(r"^## (.+)$", text[: m.start()], re.M)
        blocks.append((headings[-1] if headings else "", m.group(1)))
    return blocks


def commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [args for line in joined.splitlines() if (args := shlex.split(line, comments=True))]


def on_the_sample(args: list[str]) -> list[str]:
    out = list(args)
    for i in range(1, len(out)):
        out[i] = ON_THE_SAMPLE.get((out[i - 1], out[i]), out[i])
    if out[:2] == ["melset", "train"] and "--epochs" not in out:
        out += TRAIN_EPOCHS
    return out


class Sandbox:
    """One folder where the README's blocks run in order; each heading's blocks run once."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[str, list[tuple[list[str], subprocess.CompletedProcess]]] = {}
        self.blocks = shell_blocks(README.read_text())
        (root / "sample").symlink_to(SAMPLE)
        (root / "fma_metadata").symlink_to(SAMPLE_TRACKS.parent)
        (root / "fma_small").symlink_to(SAMPLE_AUDIO)
        (root / "song.mp3").symlink_to(SAMPLE_AUDIO / "200" / "200010.mp3")
        rows = ["path,label"]
        for tid, genre in sample_genres().items():
            clip = SAMPLE_AUDIO / "200" / f"{tid}.mp3"
            (root / "genres" / genre.lower()).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip, root / "genres" / genre.lower() / f"{tid}.mp3")
            (root / "my_music").mkdir(exist_ok=True)
            (root / "my_music" / f"{tid}.mp3").symlink_to(clip)
            rows.append(f"{tid}.mp3,{genre}")
        (root / "files.csv").write_text("\n".join(rows) + "\n")

    def melset(self, args: list[str]) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "melset", *args], cwd=self.root, capture_output=True, text=True, timeout=240
        )
        assert proc.returncode == 0, f"melset {shlex.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        for option in MADE:
            if option in args:
                made = self.root / args[args.index(option) + 1]
                assert made.exists(), f"melset {shlex.join(args)} left no {made.name}"
        return proc

    def run(self, args: list[str]) -> subprocess.CompletedProcess | None:
        if args[0] == "make":
            proc = subprocess.run(["make", "-n", *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, f"make -n {shlex.join(args[1:])}: {proc.stderr}"
            if args[1:] == ["demo"]:
                lines = [shlex.split(line) for line in proc.stdout.splitlines() if re.match(r"\S*bin/melset\s", line)]
                assert lines, "make -n demo prints no melset command"
                for line in lines:
                    self.melset(line[1:])
            return proc
        if args[:1] == ["source"]:
            assert args[1] == ".venv/bin/activate"
            return None
        if args[0] in ("melset", ".venv/bin/melset"):
            return self.melset(on_the_sample(args)[1:])
        raise AssertionError(f"README's {shlex.join(args)!r}: tests/test_readme.py does not know how to run it")

    def section(self, heading: str) -> list[tuple[list[str], subprocess.CompletedProcess]]:
        if heading not in self.done:
            ran = [(args, self.run(args)) for h, block in self.blocks if h == heading for args in commands(block)]
            assert ran, f"README has no shell block under ## {heading}"
            self.done[heading] = ran
        return self.done[heading]


SECTIONS = ["Quick start", "FMA in five commands", "GTZAN or your own folders", "Training in three commands"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("readme"))


def _out(ran, *first) -> str:
    """The stdout of the command that starts with `first`."""
    return next(proc.stdout for args, proc in ran if tuple(args[: len(first)]) == first)


def test_every_shell_block_of_the_readme_is_run_here():
    headings = {heading for heading, _ in shell_blocks(README.read_text())}
    assert headings == set(SECTIONS), f"shell blocks under {sorted(headings ^ set(SECTIONS))}: run them here too"


@pytest.mark.slow
def test_quick_start_runs_as_printed(sandbox):
    ran = sandbox.section("Quick start")
    assert (sandbox.root / "demo-out" / "store" / "mels.npy").exists()
    assert (sandbox.root / "demo-out" / "200010.png").stat().st_size > 0
    assert (sandbox.root / "demo-out" / "report.html").exists()
    assert "Usage: melset" in _out(ran, ".venv/bin/melset", "--help")
    assert "version" in _out(ran, "melset", "--version")


@pytest.mark.slow
def test_fma_in_five_commands_runs_as_printed(sandbox):
    ran = sandbox.section("FMA in five commands")
    assert "8 ok" in _out(ran, "melset", "extract")
    assert "ok" in _out(ran, "melset", "info")
    assert (sandbox.root / "200010.png").stat().st_size > 0
    # docs/exports.md: labels for every track with a genre, pickles for the ok rows only
    pickles = sorted(p.name for p in (sandbox.root / "notebook" / "pickles").iterdir())
    assert pickles == [f"{tid}.pickle" for tid in OK_CLIPS]
    with open(sandbox.root / "notebook" / "y.pickle", "rb") as f:
        assert len(pickle.load(f)) == 15
    assert "wrote 8 spectrogram pickles, 15 labels and 6 classes" in _out(ran, "melset", "export")


@pytest.mark.slow
def test_gtzan_or_your_own_folders_runs_as_printed(sandbox):
    ran = sandbox.section("GTZAN or your own folders")
    for _args, proc in ran:
        assert "8 ok" in proc.stdout, proc.stdout
    assert "folders" in ran[0][1].stdout and "manifest" in ran[1][1].stdout


@pytest.mark.slow
def test_training_in_three_commands_runs_as_printed(sandbox):
    pytest.importorskip("torch")
    sandbox.section("FMA in five commands")  # the store it trains on
    ran = sandbox.section("Training in three commands")
    assert (sandbox.root / "runs" / "first" / "model.pt").exists()
    assert "accuracy" in _out(ran, "melset", "evaluate")
    assert _out(ran, "melset", "predict").startswith("song.mp3")


# ---- the docs check ---------------------------------------------------------------------------

PAGES = sorted(DOCS.glob("*.md"))
# words that tell how melset was made rather than what it does
PROVENANCE = [
    r"\bhelpers?\b",
    r"\bsessions?\b",
    r"\bissues? ",
    r"\battack(s|ed|er|ers)?\b",
    r"\blent\b",
    r"\bthis task\b",
    r"\bthe final code\b",
    r"\b20\d\d-\d\d-\d\d\b",
]


def _prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path) -> list[str]:
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", _prose(path.read_text()))


def test_the_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines; move the details into docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / link.split("#")[0]).resolve() for link in _links(README)}
    missing = [p.name for p in PAGES if p.resolve() not in linked]
    assert not missing, f"README.md links no docs/{missing}"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for link in _links(page):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name} links {link}: no file {path}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name} links {link}: {path.name} has no heading #{anchor}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_docs_page_opens_with_a_table_of_contents(page):
    head = page.read_text().split("\n## ", 1)[0]
    entries = re.findall(r"^\s*- \[[^\]]+\]\(#([^)]+)\)", head, re.M)
    assert len(entries) >= 2, f"{page.name} has no table of contents before its first section"
    assert set(entries) <= _anchors(page)


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_no_page_tells_how_it_was_made(page):
    text = page.read_text()
    found = [m.group(0) for pattern in PROVENANCE for m in re.finditer(pattern, text, re.I)]
    assert not found, f"{page.name} speaks of how melset was made: {found}; say what melset does"


@pytest.mark.parametrize(
    "told",
    ["a helper's fix", "in this session", "the speed issue asked", "an attack found", "none was lent", "2026-11-28"],
)
def test_the_provenance_check_catches(told):
    assert any(re.search(pattern, told, re.I) for pattern in PROVENANCE)


def test_the_provenance_check_spares_test_names():
    assert not any(re.search(pattern, "see tests/test_store_attacks.py", re.I) for pattern in PROVENANCE)
