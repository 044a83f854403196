"""Any recipe, from flags or a file: checked before any work, computed as librosa computes it."""

from __future__ import annotations

import json
import tomllib
import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import SAMPLE_AUDIO, SAMPLE_TRACKS, run_melset, store_bytes, write_audio
from melset import audio, features
from melset.cli import main
from melset.errors import MelsetError, RecipeError, UsageError
from melset.melscale import empty_mel_filters
from melset.recipe import (
    Recipe,
    feature_difference,
    read_recipe_file,
    recipe_from_options,
)

librosa = pytest.importorskip("librosa")


def cli(*args):
    """melset in this process: for checks that end before any work starts."""
    return CliRunner().invoke(main, [str(a) for a in args])


# -- the recipe object ------------------------------------------------------------------------


def test_recipe_error_is_a_usage_error_and_a_value_error():
    assert issubclass(RecipeError, UsageError) and issubclass(RecipeError, MelsetError)
    with pytest.raises(ValueError):  # callers that caught ValueError before keep working
        Recipe(n_mels=0)


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(fmax=11025.5), r"fmax \(--fmax\) 11025.5 Hz is above the Nyquist frequency 11025 Hz"),
        (dict(sample_rate=16000, fmax=11025.0), "above the Nyquist frequency 8000 Hz"),
        (dict(fmin=4000, fmax=4000), r"fmin \(--fmin\) 4000 Hz must be below fmax 4000 Hz"),
        (dict(fmin=5000, fmax=300), "must be below fmax 300 Hz"),
        (dict(fmin=-1), r"fmin \(--fmin\) must be 0 Hz or more, not -1"),
        (dict(hop_length=4 * 2048), r"hop_length \(--hop-length\) 8,192 must be under 4 \* n_fft = 8,192"),
        (dict(hop_length=0), "hop_length .* must be at least 1 sample, not 0"),
        (dict(hop_length=-512), "must be at least 1 sample, not -512"),
        (dict(n_mels=512, n_fft=1024), r"n_mels \(--n-mels\) 512 is too many for n_fft 1024 .* stay empty"),
        (dict(n_mels=10**12), "values per matrix is over the limit"),
        (dict(n_mels=0), r"n_mels \(--n-mels\) must be at least 1, not 0"),
        (dict(n_frames=0), r"n_frames \(--frames\) must be at least 1, not 0"),
        (dict(n_frames=-5), "n_frames .* must be at least 1, not -5"),
        (dict(n_frames=20_000_000, n_mels=1), "keeps .* s of audio per clip"),
        (dict(sample_rate=999), r"sample_rate \(--sample-rate\) must be between 1,000 and 192,000 Hz, not 999"),
        (dict(sample_rate=192_001), "must be between 1,000 and 192,000 Hz, not 192,001"),
        (dict(n_fft=0), r"n_fft \(--n-fft\) must be between 1 and 65,536 samples, not 0"),
        (dict(n_fft=2**20), "must be between 1 and 65,536 samples"),
        (dict(fmin=float("nan")), r"fmin \(--fmin\) must be a finite number, not nan"),
        (dict(fmax=float("inf")), "fmax .* must be a finite number, not inf"),
        (dict(top_db=float("-inf")), "top_db .* must be a finite number"),
        (dict(top_db=0), r"top_db \(--top-db\) must be above 0 dB \(or none to keep every level\)"),
        (dict(amin=0.0), r"amin \(--amin\) must be above 0"),
        (dict(n_mels="128"), r"n_mels \(--n-mels\) must be a whole number, not '128'"),
        (dict(n_fft=True), "n_fft .* must be a whole number, not True"),
        (dict(sample_rate=22050.0), "sample_rate .* must be a whole number, not 22050.0"),
        (dict(fmin="0"), r"fmin \(--fmin\) must be a number, not '0'"),
        (dict(top_db=[80]), r"top_db \(--top-db\) must be a number or none, not \[80\]"),
        (dict(fmin=None), "fmin .* must be a number, not None"),
        (dict(scaling="minmax"), r"scaling \(--scaling\) must be one of minmax-per-frame, none, not 'minmax'"),
        (dict(dtype="float64"), "dtype .* must be one of float16, float32"),
        (dict(resample="kaiser"), "resample must be one of soxr_hq"),
    ],
)
def test_nonsense_is_refused_with_one_sentence(values, message):
    with pytest.raises(RecipeError, match=message) as e:
        Recipe(**values)
    text = str(e.value)
    assert "\n" not in text and len(text) < 300


def test_values_are_normalised_so_one_recipe_has_one_manifest():
    a = Recipe(fmin=0, fmax=8000, top_db=80, amin=1e-10, sample_rate=np.int64(16000))
    b = Recipe(fmin=0.0, fmax=8000.0, top_db=80.0, sample_rate=16000)
    assert a == b and json.dumps(a.to_dict()) == json.dumps(b.to_dict())
    assert type(a.sample_rate) is int and type(a.fmin) is float


def test_edges_that_librosa_accepts_are_accepted():
    Recipe(fmax=11025.0)  # exactly Nyquist
    Recipe(hop_length=4 * 2048 - 1)
    Recipe(sample_rate=1000, n_fft=256, hop_length=64, n_mels=16, n_frames=64)
    Recipe(sample_rate=192_000, n_fft=8192, hop_length=2048, n_mels=256, n_frames=64)
    Recipe(n_fft=1023, hop_length=300)  # odd window
    Recipe(top_db=None, scaling="none", amin=1e-5)


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax",
    [
        (22050, 2048, 128, 0.0, 11025.0),
        # the largest n_mels that librosa fills, and the first that leaves a filter empty
        (22050, 2048, 617, 0.0, 11025.0),
        (22050, 2048, 618, 0.0, 11025.0),
        (16000, 512, 192, 0.0, 8000.0),
        (16000, 512, 193, 0.0, 8000.0),
        (44100, 4096, 680, 30.0, 16000.0),
        (44100, 4096, 681, 30.0, 16000.0),
        (8000, 256, 120, 300.0, 3400.0),
        (8000, 256, 121, 300.0, 3400.0),
        (1000, 64, 33, 0.0, 500.0),
        (48000, 1023, 200, 20.0, 20000.0),
    ],
)
def test_empty_filters_found_exactly_where_librosa_builds_them(sr, n_fft, n_mels, fmin, fmax):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    expected = np.flatnonzero(fb.max(axis=1) == 0)
    assert np.array_equal(empty_mel_filters(sr, n_fft, n_mels, fmin, fmax), expected)
    if len(expected):
        with pytest.raises(RecipeError, match="stay empty"):
            Recipe(sample_rate=sr, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, fmin=fmin, fmax=fmax)
    else:
        Recipe(sample_rate=sr, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, fmin=fmin, fmax=fmax)


@pytest.mark.parametrize("n_fft, hop", [(2048, 512), (1023, 300), (512, 160), (1024, 2048), (4095, 1024), (7, 3)])
def test_sample_counts_match_librosa_framing(n_fft, hop):
    n_frames = 40
    r = Recipe(n_fft=n_fft, hop_length=hop, n_frames=n_frames, n_mels=1, dtype="float32")
    rng = np.random.default_rng(n_fft + hop)
    y = rng.standard_normal(r.min_samples + 2 * hop).astype(np.float32)

    def frames(n):  # librosa's own count, for inputs that reach at least one window after padding
        return librosa.stft(y[:n], n_fft=n_fft, hop_length=hop).shape[1]

    assert frames(r.min_samples) == n_frames == features.n_centred_frames(r.min_samples, hop, n_fft)
    assert frames(r.min_samples - 1) == n_frames - 1 == features.n_centred_frames(r.min_samples - 1, hop, n_fft)
    # the kept frames read exactly samples_needed samples: any later sample changes nothing
    full = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=n_fft, hop_length=hop, n_mels=1)[:, :n_frames]
    cut = y.copy()
    cut[r.samples_needed :] = 0
    assert np.array_equal(features.mel_power(cut, r), features.mel_power(y, r))
    changed = y.copy()
    changed[r.samples_needed - 1] += 1e6  # the window's last weight is tiny, not zero
    assert not np.array_equal(features.mel_power(changed, r), features.mel_power(y, r))
    np.testing.assert_allclose(features.mel_power(y, r), full, rtol=1e-3, atol=1e-6 * full.max())


def test_feature_difference_ignores_how_rows_are_decoded_and_stored():
    assert feature_difference(Recipe(), Recipe(dtype="float32", decoder="av", on_short="pad")) is None
    assert feature_difference(Recipe(n_mels=64), Recipe().to_dict()) == "n_mels 64 vs 128"
    assert feature_difference(Recipe(fmax=8000), Recipe()) == "fmax 8000.0 vs None"


# -- the partial decode follows the recipe --------------------------------------------------------


@pytest.fixture(scope="module")
def rated_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rates")
    files = {rate: write_audio(d / f"{rate}.wav", seconds=20, rate=rate, subtype="FLOAT") for rate in (8000, 48000)}
    files[44100] = SAMPLE_AUDIO / "200" / "200047.mp3"
    return files


@pytest.mark.slow
@pytest.mark.parametrize(
    "native, recipe",
    [
        (44100, Recipe(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40, n_frames=1000)),
        (44100, Recipe(sample_rate=44100, n_fft=4096, hop_length=1024, n_frames=512)),
        (44100, Recipe(sample_rate=1000, n_fft=128, hop_length=32, n_mels=20, n_frames=256)),
        (44100, Recipe(sample_rate=4000, n_fft=256, hop_length=64, n_mels=32, n_frames=500)),
        (8000, Recipe(sample_rate=22050, n_fft=1023, hop_length=300, n_frames=600)),
        (8000, Recipe(sample_rate=192_000, n_fft=8192, hop_length=4096, n_frames=300)),
        (48000, Recipe(sample_rate=2000, n_fft=128, hop_length=50, n_mels=16, n_frames=300)),
        (48000, Recipe(sample_rate=96000, n_fft=4096, hop_length=2048, n_frames=500)),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else f"sr{v.sample_rate}-fft{v.n_fft}-hop{v.hop_length}",
)
def test_partial_decode_equals_librosa_load_over_the_kept_frames(rated_files, native, recipe):
    path = rated_files[native]
    d = audio.decode(path, recipe.sample_rate, recipe.input_frames_needed, decoder="soundfile")
    assert d.native_rate == native and not d.reached_end, "the recipe needs only part of the file"
    ref, _ = librosa.load(path, sr=recipe.sample_rate)
    n = recipe.samples_needed
    assert len(d.samples) >= n and len(ref) >= n
    bad = np.flatnonzero(d.samples[:n] != ref[:n])
    assert not len(bad), f"differs from librosa.load from sample {bad[0]} of the {n} the frames use"


# -- recipe files ------------------------------------------------------------------------------------


def test_recipe_files_json_and_toml_give_the_recipe(tmp_path):
    r = Recipe(sample_rate=16000, n_mels=64, fmin=50, fmax=7000, top_db=None, scaling="none", dtype="float32")
    (tmp_path / "r.json").write_text(r.to_json())
    (tmp_path / "r.toml").write_text(r.to_toml())
    (tmp_path / "r.txt").write_text(r.to_toml())  # no telling suffix: TOML by its look
    (tmp_path / "partial.toml").write_text('n_mels = 64\nfmax = 8000\ntop_db = "None"\n')
    for name in ("r.json", "r.toml", "r.txt"):
        assert recipe_from_options(tmp_path / name) == r
    assert tomllib.loads(r.to_toml())["fmax"] == 7000.0
    part = recipe_from_options(tmp_path / "partial.toml")
    assert (part.n_mels, part.fmax, part.top_db, part.sample_rate) == (64, 8000.0, None, 22050)
    assert recipe_from_options(None) == Recipe()


def test_flags_override_only_the_values_they_name(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"sample_rate": 16000, "n_mels": 64, "fmax": 7000}))
    r = recipe_from_options(tmp_path / "r.json", n_mels=32, fmax=None)
    assert (r.sample_rate, r.n_mels, r.fmax) == (16000, 32, None)
    # a flag may repair the file's value; a bad value that stays is blamed on the file
    (tmp_path / "bad.json").write_text(json.dumps({"sample_rate": 16000, "fmax": 11025}))
    assert recipe_from_options(tmp_path / "bad.json", fmax=8000.0).fmax == 8000.0
    with pytest.raises(RecipeError, match=r"^recipe file .*bad.json: fmax \(--fmax\) 11025 Hz is above"):
        recipe_from_options(tmp_path / "bad.json")
    with pytest.raises(RecipeError, match=r"^fmax \(--fmax\) 9000 Hz is above"):
        recipe_from_options(tmp_path / "bad.json", fmax=9000.0)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.json", '{\n  "n_mels": 64,\n  "fmax": 8000,\n}\n', "is not valid JSON: .* at line 4, column 1"),
        ("a.json", '{"n_mels": 64', "is not valid JSON: .* at line 1"),
        ("a.toml", "n_mels = 64\nfmax 8000\n", r"is not valid TOML: expected '=' .*\(at line 2, column 6\)"),
        ("a.json", "", "is empty"),
        ("a.json", "[1, 2]", "must hold an object of recipe parameters, not a list"),
        ("a.json", '"n_mels"', "must hold an object of recipe parameters, not a str"),
        ("a.json", '{"n_mel": 64}', "unknown recipe key 'n_mel'; did you mean n_mels"),
        ("a.json", '{"frames": 64}', "unknown recipe key 'frames'; did you mean n_frames"),
        ("a.json", '{"n_mels": 64, "n_mels": 32}', "key 'n_mels' is given twice"),
        ("a.json", '{"n_mels": true}', r"n_mels \(--n-mels\) must be a whole number, not True"),
        ("a.json", '{"n_mels": "128"}', "must be a whole number, not '128'"),
        ("a.json", '{"n_mels": 128.0}', "must be a whole number, not 128.0"),
        ("a.json", '{"n_mels": [128]}', "must be a whole number"),
        ("a.json", '{"fmin": NaN}', "fmin .* must be a finite number, not nan"),
        ("a.json", '{"fmin": Infinity}', "must be a finite number, not inf"),
        ("a.json", '{"fmin": "low"}', r"fmin \(--fmin\) must be a number, not 'low'"),
        ("a.json", '{"n_fft": 99999999999999999999}', "must be between 1 and 65,536"),
        ("a.toml", "n_mels = true\n", "must be a whole number, not True"),
        ("a.toml", "[recipe]\nn_mels = 64\n", "unknown recipe key 'recipe'; .*`melset recipe"),
        ("a.json", '{"identity": {"recipe": {}}}', "unknown recipe key 'identity'; .*`melset recipe"),
    ],
)
def test_bad_recipe_files_are_refused_naming_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(RecipeError, match=message) as e:
        recipe_from_options(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_unreadable_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        read_recipe_file(tmp_path / "moved.json")
    with pytest.raises(RecipeError, match="is a folder; --recipe takes a JSON or TOML file"):
        read_recipe_file(tmp_path)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(RecipeError, match="is not UTF-8 text"):
        read_recipe_file(tmp_path / "bin.json")
    odd = tmp_path / "[brackets] r.json"
    odd.write_text('{"n_mels": 64}')
    assert recipe_from_options(odd).n_mels == 64


# -- the command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fmax", "20000"], "fmax (--fmax) 20000 Hz is above the Nyquist frequency 11025 Hz"),
        (["--fmin", "8000", "--fmax", "4000"], "fmin (--fmin) 8000 Hz must be below fmax 4000 Hz"),
        (["--fmin", "-5"], "fmin (--fmin) must be 0 Hz or more"),
        (["--hop-length", "8192"], "hop_length (--hop-length) 8,192 must be under 4 * n_fft"),
        (["--hop-length", "0"], "must be at least 1 sample"),
        (["--n-mels", "1000"], "n_mels (--n-mels) 1000 is too many for n_fft 2048"),
        (["--frames", "0"], "n_frames (--frames) must be at least 1"),
        (["--sample-rate", "500"], "sample_rate (--sample-rate) must be between 1,000 and 192,000 Hz"),
        (["--n-fft", "-3"], "n_fft (--n-fft) must be between 1 and 65,536"),
        (["--fmin", "nan"], "must be a finite number, not nan"),
        (["--top-db", "inf"], "must be a finite number, not inf"),
        (["--top-db", "-80"], "top_db (--top-db) must be above 0 dB"),
        (["--amin", "0"], "amin (--amin) must be above 0"),
    ],
)
def test_extract_refuses_nonsense_before_any_work(tmp_path, args, message):
    out = tmp_path / "store"
    res = cli("extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, "--quiet", *args)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("melset: error: ") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not out.exists(), "refused before the store was made"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fmax", "abc"], "'abc' is neither a number nor none"),
        (["--n-mels", "12.5"], "'12.5' is not a valid integer"),
        (["--scaling", "minmax"], "'minmax' is not one of"),
    ],
)
def test_extract_refuses_values_of_the_wrong_kind(tmp_path, args, message):
    out = tmp_path / "store"
    res = cli("extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, *args)
    assert res.exit_code == 2 and message in res.output and not out.exists()


def test_extract_refuses_a_bad_recipe_file_before_any_work(tmp_path):
    out = tmp_path / "store"
    (tmp_path / "r.json").write_text('{"n_mels": 64, "frame": 10}')
    res = cli(
        "extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, "--recipe", tmp_path / "r.json"
    )
    assert res.exit_code == 2 and "unknown recipe key 'frame'" in res.stderr and "r.json" in res.stderr
    res = cli("extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", out, "--recipe", tmp_path / "x")
    assert res.exit_code == 2 and "does not exist" in res.stderr
    (tmp_path / "[bad] r.json").write_text('{"n_mels": 0}')
    res = cli("recipe", tmp_path / "[bad] r.json")
    assert res.exit_code == 2 and f"recipe file {tmp_path / '[bad] r.json'}: n_mels (--n-mels)" in res.stderr
    assert not out.exists()


def test_recipe_command_prints_the_default_ready_to_feed_back(tmp_path):
    res = cli("recipe")
    assert res.exit_code == 0 and json.loads(res.stdout) == Recipe().to_dict()
    (tmp_path / "r.json").write_text(res.stdout)
    assert recipe_from_options(tmp_path / "r.json") == Recipe()
    res = cli("recipe", "--toml")
    assert res.exit_code == 0 and Recipe.from_dict(tomllib.loads(res.stdout)) == Recipe()
    # a recipe file: checked, completed with the defaults
    (tmp_path / "p.toml").write_text("n_mels = 64\n")
    assert json.loads(cli("recipe", tmp_path / "p.toml").stdout) == Recipe(n_mels=64).to_dict()
    (tmp_path / "bad.toml").write_text("n_mels = 0\n")
    res = cli("recipe", tmp_path / "bad.toml")
    assert res.exit_code == 2 and "n_mels (--n-mels) must be at least 1" in res.stderr
    res = cli("recipe", tmp_path)
    assert res.exit_code == 2 and "is neither a store" in res.stderr


def _clips(tmp_path, ids=("200010", "200047", "200090")):
    """A manifest of real sample clips (two 44.1 kHz stereo, one 22.05 kHz mono), for quick stores."""
    genres = {"200010": "Folk", "200047": "Classical", "200090": "Experimental", "200036": "Jazz"}
    rows = pd.DataFrame({"path": [f"200/{t}.mp3" for t in ids], "label": [genres[t] for t in ids]})
    rows.to_csv(tmp_path / "clips.csv", index=False)
    return ["--manifest", tmp_path / "clips.csv", "--audio", SAMPLE_AUDIO]


@pytest.mark.slow
def test_same_recipe_from_file_or_flags_writes_the_same_bytes(tmp_path):
    flags = ["--sample-rate", "16000", "--n-mels", "64", "--fmin", "50", "--fmax", "7000", "--frames", "300"]
    run_melset("extract", *_clips(tmp_path), "--out", tmp_path / "flags", "--quiet", *flags)
    printed = run_melset("recipe", tmp_path / "flags").stdout
    assert json.loads(printed)["n_mels"] == 64 and json.loads(printed)["fmax"] == 7000.0
    (tmp_path / "r.json").write_text(printed)
    (tmp_path / "r.toml").write_text(run_melset("recipe", tmp_path / "flags", "--toml").stdout)
    for name in ("r.json", "r.toml"):
        out = tmp_path / f"from-{name}"
        run_melset("extract", *_clips(tmp_path), "--out", out, "--quiet", "--recipe", tmp_path / name)
        assert store_bytes(out) == store_bytes(tmp_path / "flags")
        m = json.loads((out / "manifest.json").read_text())["identity"]
        assert m == json.loads((tmp_path / "flags" / "manifest.json").read_text())["identity"]
    # the file's store resumes from the flags (one identity), and a flag beside the file wins
    proc = run_melset("extract", *_clips(tmp_path), "--out", tmp_path / "from-r.json", "--quiet", *flags)
    assert "3 already done" in proc.stdout
    out = tmp_path / "override"
    (tmp_path / "r32.json").write_text(json.dumps({**json.loads(printed), "dtype": "float32", "on_short": "pad"}))
    run_melset(
        "extract", *_clips(tmp_path), "--out", out, "--quiet", "--recipe", tmp_path / "r32.json", "--n-mels", "32"
    )
    recipe = json.loads((out / "manifest.json").read_text())["identity"]["recipe"]
    assert (recipe["n_mels"], recipe["sample_rate"], recipe["fmax"]) == (32, 16000, 7000.0)
    assert (recipe["dtype"], recipe["on_short"]) == ("float32", "pad"), "flags left at their defaults do not override"
    mels = np.load(out / "mels.npy")
    assert mels.shape == (3, 32, 300) and mels.dtype == np.float32


@pytest.mark.slow
def test_show_draws_with_the_stores_own_axes(tmp_path, monkeypatch):
    import melset.plots

    out = tmp_path / "store"
    flags = ["--sample-rate", "16000", "--hop-length", "256", "--n-mels", "64", "--fmin", "100", "--fmax", "6000"]
    run_melset("extract", *_clips(tmp_path, ("200010",)), "--out", out, "--quiet", "--frames", "500", *flags)
    figures = []
    monkeypatch.setattr(melset.plots, "_save", lambda fig, path: figures.append(fig) or str(path))
    res = cli("show", out, "--track", "200/200010.mp3", "--png", tmp_path / "s.png")
    assert res.exit_code == 0, res.output
    ax = figures[0].axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 500 * 256 / 16000))
    assert ax.get_ylim() == pytest.approx((0.0, 64.0))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "100" and labels[-1] == "6000" and "1024" in labels
    ticks = ax.get_yticks()
    assert ticks[0] == pytest.approx(0.0) and ticks[-1] == pytest.approx(64.0)
    mel_1024 = (librosa.hz_to_mel(1024) - librosa.hz_to_mel(100)) / (librosa.hz_to_mel(6000) - librosa.hz_to_mel(100))
    assert ticks[labels.index("1024")] == pytest.approx(64 * mel_1024)
    assert figures[0].axes[1].get_ylabel() == "scaled log-mel"

    # a manifest whose recipe was edited by hand: one sentence, never wrong axes. The store
    # notices any edit by its manifest's own checksum; an editor who also recomputes that
    # checksum meets the recipe's own checks.
    from melset.store.format import _sealed

    manifest = json.loads((out / "manifest.json").read_text())
    raw = json.loads(json.dumps(manifest))
    raw["identity"]["recipe"]["n_mels"] = 32
    (out / "manifest.json").write_text(json.dumps(raw))
    res = cli("recipe", out)
    assert res.exit_code == 2 and "manifest.json was changed after melset wrote it" in res.stderr, res.output
    for change, message in [
        (dict(n_mels=32), "is damaged: its recipe makes (32, 500) matrices, mels.npy holds (64, 500)"),
        (dict(fmax=9000.0), "the recorded recipe is not valid: fmax (--fmax) 9000 Hz is above the Nyquist"),
        (dict(n_mels="64"), "the recorded recipe is not valid: n_mels (--n-mels) must be a whole number"),
    ]:
        edited = json.loads(json.dumps(manifest))
        edited["identity"]["recipe"].update(change)
        (out / "manifest.json").write_text(json.dumps(_sealed(edited)))
        for args in (["recipe", out], ["show", out, "--track", "200/200010.mp3", "--png", tmp_path / "x.png"]):
            res = cli(*args)
            assert res.exit_code == 2 and message in res.stderr and "manifest.json" in res.stderr, res.output


def test_spectrogram_axes_follow_the_recipe(tmp_path, monkeypatch):
    import melset.plots

    figures = []
    monkeypatch.setattr(melset.plots, "_save", lambda fig, path: figures.append(fig) or str(path))
    melset.plots.spectrogram_png(np.zeros((40, 100)), tmp_path / "x.png", 8000, 80, 300.0, 3400.0, scaled=False)
    ax = figures[0].axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 1.0))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["300", "512", "1024", "2048", "3400"]
    assert figures[0].axes[1].get_ylabel() == "dB below the clip's peak"
    positions, labels = melset.plots.mel_ticks(128, 0.0, 11025.0)
    assert labels[0] == "0" and labels[-1] == "11025" and positions[-1] == pytest.approx(128)


@pytest.mark.slow
def test_predict_and_dataset_use_the_stores_recipe(tmp_path):
    pytest.importorskip("torch")
    from melset.dataset import MelDataset
    from melset.predict import load_run

    store, run = tmp_path / "store", tmp_path / "run"
    flags = ["--sample-rate", "16000", "--n-fft", "1024", "--hop-length", "256", "--n-mels", "64"]
    flags += ["--fmin", "40", "--fmax", "7600", "--frames", "512"]
    # FMA's own split: the training split has rows to learn from
    run_melset("extract", "--tracks", SAMPLE_TRACKS, "--audio", SAMPLE_AUDIO, "--out", store, "--quiet", *flags)
    data = MelDataset(store)
    assert data.recipe["n_mels"] == 64 and tuple(data[0][0].shape) == (1, 64, 512)
    run_melset("train", store, "--run", run, "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--quiet")
    assert json.loads(cli("recipe", run).stdout) == json.loads(cli("recipe", store).stdout)

    t = pd.read_parquet(store / "tracks.parquet")
    mels = np.load(store / "mels.npy", mmap_mode="r")
    rows = t.index[t["status"] == "ok"][:2]
    model = load_run(str(run), "cpu")
    preds = json.loads(run_melset("predict", run, *t.loc[rows, "path"], "--json", "--top", "99").stdout)
    for row, p in zip(rows, preds):
        # the probabilities of the stored matrix: predict computed the same matrix from the file
        expected = model.probabilities(np.asarray(mels[row : row + 1]))[0]
        got = {g["genre"]: g["probability"] for g in p["top"]}
        assert got == pytest.approx({c: float(v) for c, v in zip(model.classes, expected)}, abs=1e-6)

    # a store made with another recipe is refused, not scored
    other = tmp_path / "other"
    run_melset("extract", *_clips(tmp_path, ("200010",)), "--out", other, "--quiet", "--sample-rate", "22050")
    proc = run_melset("evaluate", run, "--store", other, check=False)
    assert proc.returncode == 2 and "was made with another recipe" in proc.stderr and "sample_rate" in proc.stderr


# -- any accepted recipe computes what librosa computes ---------------------------------------------


def _librosa_log_mel(y, r):
    from sklearn.preprocessing import MinMaxScaler

    mel = librosa.feature.melspectrogram(
        y=y, sr=r.sample_rate, n_fft=r.n_fft, hop_length=r.hop_length, n_mels=r.n_mels, fmin=r.fmin, fmax=r.fmax
    )[:, : r.n_frames]
    db = librosa.power_to_db(mel, ref=np.max, amin=r.amin, top_db=r.top_db)
    return MinMaxScaler().fit_transform(db) if r.scaling == "minmax-per-frame" else db


@pytest.mark.slow
def test_random_accepted_recipes_compute_what_librosa_computes():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    pytest.importorskip("sklearn")

    @hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
    @hypothesis.given(
        sr=st.sampled_from([1000, 8000, 16000, 22050, 44100, 96000, 192000]),
        n_fft=st.integers(16, 4096),
        hop_ratio=st.floats(0.05, 3.9),
        n_mels=st.integers(1, 160),
        band=st.tuples(st.floats(0.0, 0.45), st.floats(0.5, 1.0)),
        n_frames=st.integers(1, 64),
        top_db=st.sampled_from([None, 40.0, 80.0]),
        scaling=st.sampled_from(["minmax-per-frame", "none"]),
        extra=st.integers(-3, 3),
    )
    def check(sr, n_fft, hop_ratio, n_mels, band, n_frames, top_db, scaling, extra):
        values = dict(
            sample_rate=sr,
            n_fft=n_fft,
            hop_length=max(1, int(hop_ratio * n_fft)),
            n_mels=n_mels,
            fmin=band[0] * sr / 2,
            fmax=band[1] * sr / 2,
            n_frames=n_frames,
            top_db=top_db,
            scaling=scaling,
            dtype="float32",
        )
        try:
            r = Recipe(**values)
        except RecipeError as exc:
            hypothesis.assume("stay empty" not in str(exc))  # the other refusals cannot happen here
            raise
        rng = np.random.default_rng(n_fft * 7 + n_mels)
        # a clip that ends anywhere around the last kept sample (zeros beyond it, as librosa pads)
        y = rng.standard_normal(max(r.min_samples, r.samples_needed + extra, n_fft // 2 + 1)).astype(np.float32)
        ours = features.log_mel(y, r)
        ref = _librosa_log_mel(y, r)
        assert ours.shape == ref.shape == r.shape
        tol = 1e-3 if scaling == "minmax-per-frame" else 1e-2
        assert float(np.abs(ours - ref).max()) <= tol, values

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check()


def test_a_recipe_file_that_is_a_fifo_or_a_device_is_refused_before_it_is_read(tmp_path):
    """`--recipe` naming a FIFO waited for a writer for ever; a device read without end."""
    import os

    fifo = tmp_path / "recipe [1].json"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        for args in (("recipe", path), ("extract", "--audio", SAMPLE_AUDIO, "--out", tmp_path / "s", "--recipe", path)):
            proc = run_melset(*args, check=False, timeout=60)
            assert proc.returncode == 2 and f"recipe file {path}: not a regular file" in proc.stderr, proc.stderr
    assert not (tmp_path / "s").exists()
