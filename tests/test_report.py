"""The HTML reports: self-contained pages, checked in headless Chromium (tests/browser.py)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from browser import pixel_spread, render
from conftest import SAMPLE_AUDIO, run_melset
from melset import report as reports
from melset.store import Store

pytestmark = pytest.mark.slow  # extracts stores, trains, starts a browser


def assert_self_contained(page: str) -> None:
    # no resource outside the file: every src/href/url() is a data: URI or a fragment
    for ref in re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.I):
        assert ref.startswith(("data:", "#")), ref
    assert not re.search(r"url\(\s*['\"]?(?!data:)", page) and "@import" not in page
    assert not re.search(r"https?://", page.split("<body>")[0])  # nothing fetched from the head
    assert "<script" not in page.lower()


def test_store_page_shows_everything_and_is_self_contained(sample_store, tmp_path):
    store = Store(sample_store)
    page = reports.store_page(store, examples=2)
    assert_self_contained(page)
    for title in ("Counts", "Failures and their reasons", "Durations", "Example spectrograms per class",
                  "Mean spectrogram per class", "Recipe and provenance"):  # fmt: skip
        assert f"<h2>{title}</h2>" in page
    t = store.tracks
    for _, row in t[t["status"] != "ok"].iterrows():  # every failure, with its reason
        assert f"<td>{row['track_id']}</td><td>{row['status']}</td>" in page
        assert reports.esc(row["error"]) in page
    ok_classes = {c for j, c in enumerate(store.classes) if np.asarray(store.labels)[store.ok_rows(), j].any()}
    for c in store.classes:  # at least one example picture per genre that has an ok track
        assert f'alt="example spectrograms of {c}"' in page or c not in ok_classes
    assert page.count('src="data:image/png;base64,') == 3 + len(ok_classes)
    assert "soxr_hq" in page and store.manifest["store_id"] in page


def test_mean_spectrograms_in_chunks_equal_numpy(sample_store):
    store = Store(sample_store)
    ok = store.ok_rows()
    labels = np.asarray(store.labels)
    mels = np.asarray(store.mels, dtype=np.float64)
    for chunk in (1, 3 * mels[0].nbytes, reports.CHUNK_BYTES):
        means, counts = reports.mean_spectrograms(store, chunk_bytes=chunk)
        for j in range(len(store.classes)):
            rows = ok[labels[ok, j] == 1]
            assert counts[j] == len(rows)
            if len(rows):
                np.testing.assert_allclose(means[j], mels[rows].mean(axis=0), rtol=0, atol=1e-12)
            else:
                assert not means[j].any()


def test_store_page_in_chromium(sample_store, tmp_path):
    html = tmp_path / "store.html"
    run_melset("report", sample_store, "--html", html)
    page = html.read_text()
    assert_self_contained(page)
    shown = render(html, tmp_path / "browser")
    assert shown.console == [] and shown.hosts == set()
    assert "Mean spectrogram per class" in shown.dom and shown.dom.count("<img") == page.count("<img")
    assert pixel_spread(shown.png) > 20  # a blank page is 0


def test_browser_check_catches_errors_and_requests(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<p>x</p><img src="https://example.com/a.png"><script>throw new Error("boom")</script>')
    shown = render(bad, tmp_path / "b", size=(400, 300))
    assert "example.com" in shown.hosts and any("boom" in line for line in shown.console)
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    assert pixel_spread(render(blank, tmp_path / "c", size=(400, 300)).png) == 0


def test_names_from_the_data_cannot_inject_markup(tmp_path):
    audio = tmp_path / "audio"
    (audio / "<i>jazz").mkdir(parents=True)
    (audio / "<i>jazz" / "a.mp3").symlink_to(SAMPLE_AUDIO / "200" / "200036.mp3")
    (audio / "<i>jazz" / "<script>alert('x').mp3").write_text("<html>not audio</html>")
    run_melset("extract", "--audio", audio, "--out", tmp_path / "s", "--quiet", "--workers", "1")
    html = tmp_path / "r.html"
    run_melset("report", tmp_path / "s", "--html", html)
    page = html.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;).mp3" in page
    assert "<i>jazz" not in page and "&lt;i&gt;jazz" in page
    shown = render(html, tmp_path / "browser")
    assert "<script" not in shown.dom and "<i>" not in shown.dom and shown.console == []


@pytest.fixture(scope="module")
def trained(sample_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    run_melset("train", sample_store, "--run", run, "--epochs", "2", "--quiet")
    return run


def test_run_page_in_chromium(trained, sample_store, tmp_path):
    html = tmp_path / "run.html"
    p = run_melset("report", trained, "--html", html, "--split", "all")
    assert "warning" not in p.stderr, p.stderr
    page = html.read_text()
    assert_self_contained(page)
    assert 'alt="training curves"' in page and 'alt="confusion matrix"' in page
    evaluation = json.loads(run_melset("evaluate", trained, "--store", sample_store, "--split", "all", "--json").stdout)
    for genre, m in evaluation["per_class"].items():  # per-genre scores as evaluate gives them
        assert f"<td>{genre}</td><td class=n>{m['precision']:.4f}</td>" in page
    shown = render(html, tmp_path / "browser")
    assert shown.console == [] and shown.hosts == set() and pixel_spread(shown.png) > 20


def test_run_page_without_its_store_says_why(trained, tmp_path):
    html = tmp_path / "run.html"
    p = run_melset("report", trained, "--html", html, "--store", tmp_path / "gone")
    assert p.returncode == 0 and "no scores" in p.stderr
    assert "no scores" in html.read_text() and 'alt="training curves"' in html.read_text()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--examples", "0"], "--examples"),
        (["--examples", "x"], "--examples"),
        (["--store", "."], "--store applies to a run"),
    ],
)
def test_bad_report_options(sample_store, tmp_path, args, words):
    p = run_melset("report", sample_store, "--html", tmp_path / "r.html", *args, check=False)
    assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_refuses_what_it_cannot_read(sample_store, tmp_path):
    (tmp_path / "folder").mkdir()
    for path, html, words in (
        (tmp_path / "folder", tmp_path / "a.html", "neither a melset store"),
        (tmp_path / "nope", tmp_path / "a.html", "does not exist"),
        (sample_store, tmp_path / "folder", "is a folder"),
    ):
        p = run_melset("report", path, "--html", html, check=False)
        assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
