"""Objects that speak (issue 24): a Store and a MelDataset say what they hold, a store is indexed
like a Hugging Face dataset, `melset.log_mel` turns samples in memory into the bytes extract
stores, and the hints of show, info and predict say what is true."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import melset
from conftest import SAMPLE_AUDIO, run_melset, sample_extract
from melset.errors import MelsetError, RunError, StoreError, UsageError

CLIP = SAMPLE_AUDIO / "200" / "200010.mp3"  # stereo 44.1 kHz, 30 s
OTHER_RECIPE = ("--sample-rate", "16000", "--n-mels", "64", "--frames", "256")


def _cli(*args):
    from melset.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], prog_name="melset")


def _sentence(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module", params=["default", "16k-64-256"])
def soundfile_store(request, tmp_path_factory) -> Path:
    """The shipped sample extracted with --decoder soundfile: the default recipe, and another."""
    out = tmp_path_factory.mktemp("objects") / "store"
    extra = () if request.param == "default" else OTHER_RECIPE
    run_melset(*sample_extract(out, "--workers", "2", "--decoder", "soundfile", *extra))
    return out


# ---- melset.log_mel ---------------------------------------------------------------------------


def test_log_mel_of_samples_in_memory_is_the_stored_row(soundfile_store):
    from melset import audio

    store = melset.Store(soundfile_store)
    recipe = melset.Recipe.from_dict(store.recipe)
    try:
        import librosa
    except ImportError:
        librosa = None
    rows = store.ok_rows()
    assert len(rows) == 8
    for row in rows:
        path = store.tracks["path"].iat[row]
        # the whole file at its own rate, as librosa.load(path, sr=None) gives it
        decoded = audio.decode(path, sf.info(path).samplerate, None, "soundfile")
        mel = melset.log_mel(decoded.samples, decoded.sample_rate, recipe)
        assert mel.dtype == np.dtype(recipe.dtype) and mel.shape == recipe.shape
        assert mel.tobytes() == store.row(row).tobytes(), path
        if librosa is not None:
            y, sr = librosa.load(path, sr=None)
            assert melset.log_mel(y, sr, store.recipe).tobytes() == store.row(row).tobytes(), path


def test_log_mel_refuses_what_it_cannot_use_in_one_sentence():
    x, sr = sf.read(CLIP, dtype="float32", always_2d=True)
    y = melset.audio.to_mono(x)
    assert "log_mel" in melset.__all__ and melset.log_mel(y, sr).shape == (128, 1024)
    with pytest.raises(MelsetError, match=r"too short for the recipe: 5\.00 s of audio gives .* on_short=\"pad\""):
        melset.log_mel(y[: 5 * sr], sr)
    padded = melset.log_mel(y[: 5 * sr], sr, melset.Recipe(on_short="pad"))
    assert padded.shape == (128, 1024) and np.isfinite(padded).all()
    with pytest.raises(UsageError, match="mono samples, one dimension; these have shape"):
        melset.log_mel(x.T, sr)
    with pytest.raises(UsageError, match="float samples within ±1 .* not int16"):
        melset.log_mel((y * 32767).astype(np.int16), sr)
    with pytest.raises(UsageError, match="positive whole number, not 0"):
        melset.log_mel(y, 0)
    with pytest.raises(UsageError, match="the array is empty"):
        melset.log_mel(y[:0], sr)
    bad = y.copy()
    bad[1000] = np.nan
    with pytest.raises(MelsetError, match="NaN or infinite sample values"):
        melset.log_mel(bad, sr)


# ---- Store: repr, indexing --------------------------------------------------------------------


def test_a_store_says_what_it_holds_and_is_indexed_like_a_dataset(sample_store):
    store = melset.Store(sample_store)
    text = repr(store)
    assert len(text.splitlines()) == 2, text
    for part in (
        str(store.root),
        "complete",
        "16 rows",
        "128x1024 float16",
        "ok 8",
        "too_short 2",
        "failed 4",
        "missing 2",
        "genre_top",
        "6 classes",
    ):
        assert part in text, text
    assert str(store) == text and len(store) == 16

    row = store.row_of(200010)
    item = store[row]
    assert set(item) == {"mel", "label", "track_id", "path", "genre_top", "subset", "split", "status", "duration_s"}
    assert item["mel"].tobytes() == np.asarray(store.mels[row]).tobytes()
    assert item["track_id"] == 200010 and item["genre_top"] == "Folk" and item["status"] == "ok"
    assert (
        store.classes[item["label"]] == "Folk" and item["split"] == "training" and item["path"].endswith("200010.mp3")
    )
    assert store[row - len(store)]["track_id"] == 200010  # negative: from the end
    assert store.track("200010")["mel"].tobytes() == item["mel"].tobytes()
    assert [r["track_id"] for r in store] == store.tracks["track_id"].to_numpy()[store.ok_rows()].tolist()

    with pytest.raises(StoreError, match=r"row 15 of .* \(track 200210\) has no spectrogram: failed \(not audio"):
        store[-1]
    for outside in (16, -17):
        with pytest.raises(IndexError, match="outside .* which has 16 rows"):
            store[outside]
    with pytest.raises(TypeError, match="indexed by one row number"):
        store["200010"]


def test_indexing_a_damaged_row_is_refused_in_words(sample_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(sample_store, copy)
    store = melset.Store(copy)
    row = int(store.ok_rows()[3])
    offset = store._mels_file.offset + row * store.mels[0].nbytes + 100
    with open(copy / "mels.npy", "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(StoreError, match=rf"row {row} of .* is damaged.*melset repair"):
        melset.Store(copy)[row]


def test_a_mel_dataset_says_what_it_serves(sample_store):
    pytest.importorskip("torch")
    from melset.dataset import MelDataset

    ds = MelDataset(sample_store, split="training", transform=abs)
    assert repr(ds).splitlines() == [
        "Dataset MelDataset",
        "    Number of datapoints: 6",
        f"    Root location: {melset.Store(sample_store).root}",
        "    Split: training (the store's own)",
        "    Classes: 6 (genre_top)",
        f"    Transform: {abs!r}",
    ]
    assert "Split: all" in repr(MelDataset(sample_store, verify=False))


# ---- hints that say what is true ---------------------------------------------------------------


def test_show_an_unknown_track_suggests_the_ids_it_holds(sample_store, tmp_path):
    png = tmp_path / "x.png"
    said = _sentence(_cli("show", sample_store, "--track", "200/200010.mp3", "--png", png))
    assert "there is no track '200/200010.mp3'" in said and "did you mean '200010'?" in said, said
    said = _sentence(_cli("show", sample_store, "--track", "20001", "--png", png))
    assert "did you mean " in said and "'200010'" in said, said
    said = _sentence(_cli("show", sample_store, "--track", "abc", "--png", png))
    assert "melset info" not in said and "include 2, 20, 200010" in said and "tracks.parquet" in said, said


def test_show_finds_a_folder_layout_id_given_without_its_folder(tmp_path):
    audio = tmp_path / "audio"
    for genre in ("rock", "jazz"):
        (audio / genre).mkdir(parents=True)
        shutil.copy(CLIP, audio / genre / f"{genre}.00001.mp3")
    store = tmp_path / "store"
    run_melset("extract", "--audio", audio, "--out", store, "--quiet", "--workers", "1")
    for given in ("rock.00001.mp3", "rock.00001"):
        said = _sentence(_cli("show", store, "--track", given, "--png", tmp_path / "x.png"))
        assert "did you mean 'rock/rock.00001.mp3'?" in said, said


def test_info_of_a_folder_that_does_not_exist_says_so(tmp_path):
    said = _sentence(_cli("info", tmp_path / "nowhere.melset"))
    assert "nowhere.melset: no such folder" in said and "manifest" not in said, said
    (tmp_path / "file.melset").write_text("x")
    said = _sentence(_cli("info", tmp_path / "file.melset"))
    assert "file.melset is a file, not a store" in said, said
    (tmp_path / "empty").mkdir()
    assert "is not a melset store (no manifest.json)" in _sentence(_cli("info", tmp_path / "empty"))


def test_a_store_given_for_a_run_is_named_a_store(sample_store, tmp_path):
    from melset.runs import read_config

    with pytest.raises(RunError, match=r"is a store, not a training run; pass a run folder made by `melset train"):
        read_config(str(sample_store))
    (tmp_path / "notes").mkdir()
    with pytest.raises(RunError, match=r"is not a training run \(it holds no config.json\)"):
        read_config(str(tmp_path / "notes"))
    pytest.importorskip("torch")
    said = _sentence(_cli("predict", sample_store, CLIP))
    assert "is a store, not a training run" in said and "train it again" not in said, said
