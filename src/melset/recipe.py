"""The recipe: every parameter that decides the bytes of a stored spectrogram.

One frozen object, written into every store's manifest and every trained run, so a
dataset always says how it was made and `predict` can apply exactly the same recipe.
A recipe that cannot give sound spectrograms is refused when it is made, with one
sentence (`RecipeError`). Recipes also come from files (`read_recipe_file`, JSON or TOML
with the manifest's keys) and from the command line (`recipe_from_options`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
import tomllib
from dataclasses import dataclass
from typing import Any

import numpy as np

from melset.errors import RecipeError
from melset.system import check_input_file
from melset.melscale import empty_mel_filters

ON_SHORT = ("skip", "pad")
SCALINGS = ("minmax-per-frame", "none")
DTYPES = ("float16", "float32")
DECODERS = ("auto", "soundfile", "av")
RESAMPLERS = ("soxr_hq",)

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 192_000
MAX_N_FFT = 2**16
MAX_VALUES = 2**26  # n_mels * n_frames: 256 MB per matrix in float32, 512 times the notebook's
MAX_RECIPE_BYTES = 1_000_000  # a recipe file is a few hundred bytes
MAX_SECONDS = 3600.0  # audio one matrix covers
# amin is compared with float32 mel power: a smaller one underflows to 0 (log 0 = -inf), a larger one to inf.
AMIN_RANGE = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))

# The command-line flag of each parameter, so a message names what the user typed.
FLAGS = {
    "sample_rate": "--sample-rate",
    "n_mels": "--n-mels",
    "n_fft": "--n-fft",
    "hop_length": "--hop-length",
    "n_frames": "--frames",
    "fmin": "--fmin",
    "fmax": "--fmax",
    "top_db": "--top-db",
    "amin": "--amin",
    "scaling": "--scaling",
    "on_short": "--on-short",
    "decoder": "--decoder",
    "dtype": "--dtype",
}
_INTS = ("sample_rate", "n_mels", "n_fft", "hop_length", "n_frames")
_FLOATS = ("fmin", "fmax", "top_db", "amin")
_NULLABLE = ("fmax", "top_db")  # None: sample_rate / 2; keep every level
_CHOICES = {"scaling": SCALINGS, "on_short": ON_SHORT, "decoder": DECODERS, "dtype": DTYPES, "resample": RESAMPLERS}
# What decides the values of a matrix (not how it is decoded, stored, or which clips are kept).
FEATURE_KEYS = ("sample_rate", "n_mels", "n_fft", "hop_length", "n_frames", "fmin", "fmax", "top_db", "amin", "scaling")


# -- the recipe ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Every parameter that decides the bytes of a stored spectrogram; the notebook's by default.

    The default is the reference notebook: ``librosa.load(path)`` (22,050 Hz mono, soxr HQ),
    ``melspectrogram(y, n_mels=128)[:, :1024]``, ``power_to_db(ref=np.max)`` and
    ``MinMaxScaler().fit_transform`` per time frame. A recipe is written into every store's
    manifest and every training run, so both always say how their data was made. Any other
    recipe computes what the same librosa calls compute with its values.

    Parameters
    ----------
    sample_rate : int
        Rate the audio is resampled to (Hz), 1,000 to 192,000.
    n_mels : int
        Mel bands (Slaney scale and normalisation, as librosa's defaults); every band must
        hold at least one FFT bin.
    n_fft, hop_length : int
        STFT window length (at most 65,536) and hop in samples (Hann window, centred
        frames); the hop is under 4 * n_fft.
    n_frames : int
        Frames kept from the start of each clip.
    fmin, fmax : float
        Lowest and highest mel filter frequency; fmax None means sample_rate / 2.
    top_db : float or None
        ``power_to_db``'s floor below the peak; None keeps every level.
    amin : float
        ``power_to_db``'s smallest power, within float32's normal range (1.18e-38 to 3.4e38).
    scaling : {"minmax-per-frame", "none"}
        Scale each time frame to [0, 1] as the notebook's MinMaxScaler, or keep dB.
    on_short : {"skip", "pad"}
        A clip shorter than n_frames is stored as too_short, or padded with silence.
    decoder : {"auto", "soundfile", "av"}
        "soundfile": libsndfile, librosa.load's samples bit for bit; "av": PyAV/FFmpeg;
        "auto": libsndfile, with stereo MP3 mixed to mono inside libmpg123 (the decoder
        libsndfile uses) before synthesis wherever the stream's side information shows the
        mix is exact (decode and resample 9-10% faster, float32 rounding apart), and FFmpeg
        for what libsndfile cannot read.
    resample : {"soxr_hq"}
        The resampler (librosa.load's default).
    dtype : {"float16", "float32"}
        Stored precision.

    Raises
    ------
    RecipeError
        A value of the wrong type, out of range, or a combination that cannot work; the
        message names the parameter (and its command-line flag) and what to change.

    Examples
    --------
    >>> Recipe().shape
    (128, 1024)
    >>> Recipe(dtype="float32", on_short="pad").to_dict()["dtype"]
    'float32'
    >>> Recipe(sample_rate=16000, fmax=8000).fmax
    8000.0
    """

    sample_rate: int = 22050
    n_mels: int = 128
    n_fft: int = 2048
    hop_length: int = 512
    n_frames: int = 1024
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2, as librosa
    top_db: float | None = 80.0
    amin: float = 1e-10
    # The notebook's `MinMaxScaler().fit_transform(mel)`: each time frame (column) on its own.
    scaling: str = "minmax-per-frame"
    # A clip shorter than n_frames is not stored ("skip", as the notebook) or padded with silence.
    on_short: str = "skip"
    # "auto": libsndfile (what librosa.load uses) for what it reads, PyAV/FFmpeg for the rest.
    decoder: str = "auto"
    resample: str = "soxr_hq"
    dtype: str = "float16"

    def __post_init__(self) -> None:
        # Types first, then normalise (0 and 0.0 are one recipe, with one manifest), then ranges.
        for name in _INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise _error(name, f"{_name(name)} must be a whole number, not {value!r}")
            object.__setattr__(self, name, int(value))
        for name in _FLOATS:
            value = getattr(self, name)
            if value is None and name in _NULLABLE:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                hint = " or none" if name in _NULLABLE else ""
                raise _error(name, f"{_name(name)} must be a number{hint}, not {value!r}")
            if not math.isfinite(value):
                raise _error(name, f"{_name(name)} must be a finite number, not {value!r}")
            object.__setattr__(self, name, float(value))
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise _error(name, f"{_name(name)} must be one of {', '.join(choices)}, not {value!r}")
        _check_ranges(self)

    @property
    def shape(self) -> tuple[int, int]:
        """(n_mels, n_frames): the shape of one stored matrix."""
        return (self.n_mels, self.n_frames)

    @property
    def nyquist(self) -> float:
        """sample_rate / 2: the highest frequency the resampled audio holds."""
        return self.sample_rate / 2.0

    @property
    def samples_needed(self) -> int:
        """Samples at `sample_rate` that the kept frames touch.

        Centred frame t covers samples [t * hop - n_fft // 2, t * hop - n_fft // 2 + n_fft), as
        librosa pads n_fft // 2 zeros each side; past the end of the clip are zeros.
        """
        return (self.n_frames - 1) * self.hop_length + self.n_fft - self.n_fft // 2

    @property
    def min_samples(self) -> int:
        """Fewest samples that still give n_frames centred frames (librosa: 1 + (len - n_fft % 2) // hop)."""
        return (self.n_frames - 1) * self.hop_length + self.n_fft % 2

    @property
    def seconds_needed(self) -> float:
        """Seconds of audio the kept frames touch."""
        return self.samples_needed / self.sample_rate

    def input_frames_needed(self, native_rate: int) -> int:
        """Samples to decode at the file's own rate: what the kept frames need, plus a margin
        that makes soxr's output over those frames bit-identical to resampling the whole file.

        soxr HQ's output differs from the whole file's over at most ~1,350 samples (measured,
        1-192 kHz either way) at the lower of the two rates before the end of its input; the
        margin is 4,096 such samples, and at least 0.25 s.
        """
        lower = min(native_rate, self.sample_rate)
        margin = max(4096, math.ceil(0.25 * native_rate), math.ceil(4096 * native_rate / lower))
        return math.ceil(self.samples_needed * native_rate / self.sample_rate) + margin

    def to_dict(self) -> dict[str, Any]:
        """The recipe as the plain dict that manifests and runs record."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The recipe as a JSON object, one key a line: what ``--recipe`` reads back."""
        return json.dumps(self.to_dict(), indent=2)

    def to_toml(self) -> str:
        """The recipe as TOML; TOML has no null, so fmax / top_db None are written as "none"."""
        lines = []
        for key, value in self.to_dict().items():
            lines.append(f"{key} = {json.dumps('none' if value is None else value)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """The recipe a manifest, a run or a recipe file holds; missing keys take the defaults.

        Unknown keys are refused; fmax and top_db may be None or the string "none".
        """
        if not isinstance(data, dict):
            raise RecipeError(f"a recipe is a table of parameters, not {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(str(key), known, n=1)
            if key in ("identity", "recipe"):
                hint = (
                    "a store's manifest or a run's config? `melset recipe STORE_OR_RUN > recipe.json` writes its recipe"
                )
            else:
                hint = f"did you mean {close[0]}?" if close else f"the keys are {', '.join(known)}"
            raise _error(key, f"unknown recipe key {key!r}; {hint}")
        values = dict(data)
        for key in _NULLABLE:
            if isinstance(values.get(key), str) and values[key].strip().lower() == "none":
                values[key] = None
        return cls(**values)


def feature_difference(a: Recipe | dict[str, Any], b: Recipe | dict[str, Any]) -> str | None:
    """The first parameter that makes matrices of recipe `a` differ from those of `b` (FEATURE_KEYS,
    not decoder, dtype or on_short), as "n_mels 64 vs 128"; None when a model can take one for the other."""
    a, b = (r.to_dict() if isinstance(r, Recipe) else r for r in (a, b))
    for key in FEATURE_KEYS:
        if a.get(key) != b.get(key):
            return f"{key} {a.get(key)} vs {b.get(key)}"
    return None


def _name(field: str) -> str:
    return f"{field} ({FLAGS[field]})" if field in FLAGS else field


def _error(key: str, message: str) -> RecipeError:
    """A RecipeError that remembers which parameter it is about (`recipe_from_options` names the file)."""
    exc = RecipeError(message)
    exc.key = key
    return exc


def _check_ranges(r: Recipe) -> None:
    if not MIN_SAMPLE_RATE <= r.sample_rate <= MAX_SAMPLE_RATE:
        raise _error(
            "sample_rate",
            f"{_name('sample_rate')} must be between {MIN_SAMPLE_RATE:,} and {MAX_SAMPLE_RATE:,} Hz, not {r.sample_rate:,}",
        )
    if not 1 <= r.n_fft <= MAX_N_FFT:
        raise _error("n_fft", f"{_name('n_fft')} must be between 1 and {MAX_N_FFT:,} samples, not {r.n_fft:,}")
    if r.hop_length < 1:
        raise _error("hop_length", f"{_name('hop_length')} must be at least 1 sample, not {r.hop_length:,}")
    if r.hop_length >= 4 * r.n_fft:
        raise _error(
            "hop_length",
            f"{_name('hop_length')} {r.hop_length:,} must be under 4 * n_fft = {4 * r.n_fft:,} samples"
            f" (a longer hop skips most of the audio); lower {FLAGS['hop_length']} or raise {FLAGS['n_fft']}",
        )
    for name in ("n_mels", "n_frames"):
        if getattr(r, name) < 1:
            raise _error(name, f"{_name(name)} must be at least 1, not {getattr(r, name):,}")
    if r.n_mels * r.n_frames > MAX_VALUES:
        raise _error(
            "n_frames",
            f"n_mels * n_frames = {r.n_mels * r.n_frames:,} values per matrix is over the limit of {MAX_VALUES:,};"
            f" lower {FLAGS['n_mels']} or {FLAGS['n_frames']}",
        )
    if r.seconds_needed > MAX_SECONDS:
        raise _error(
            "n_frames",
            f"the recipe keeps {r.seconds_needed:,.0f} s of audio per clip (n_frames * hop_length / sample_rate),"
            f" over the limit of {MAX_SECONDS:,.0f} s; lower {FLAGS['n_frames']} or {FLAGS['hop_length']}",
        )
    if r.fmin < 0:
        raise _error("fmin", f"{_name('fmin')} must be 0 Hz or more, not {r.fmin:g}")
    fmax = r.nyquist if r.fmax is None else r.fmax
    if fmax > r.nyquist:
        raise _error(
            "fmax",
            f"{_name('fmax')} {fmax:g} Hz is above the Nyquist frequency {r.nyquist:g} Hz of sample_rate"
            f" {r.sample_rate:,}; lower {FLAGS['fmax']} or raise {FLAGS['sample_rate']}",
        )
    if r.fmin >= fmax:
        raise _error(
            "fmin", f"{_name('fmin')} {r.fmin:g} Hz must be below fmax {fmax:g} Hz; lower --fmin or raise --fmax"
        )
    if r.top_db is not None and r.top_db <= 0:
        raise _error("top_db", f"{_name('top_db')} must be above 0 dB (or none to keep every level), not {r.top_db:g}")
    if r.amin <= 0:
        raise _error("amin", f"{_name('amin')} must be above 0, not {r.amin:g}")
    if not AMIN_RANGE[0] <= r.amin <= AMIN_RANGE[1]:
        raise _error(
            "amin",
            f"{_name('amin')} {r.amin:g} is outside float32's normal range {AMIN_RANGE[0]:.3g} to"
            f" {AMIN_RANGE[1]:.3g}, where the mel power is compared with it (librosa's too); use a value in it",
        )
    _check_filters(r, fmax)


def _check_filters(r: Recipe, fmax: float) -> None:
    # Filters i and i + 2 share no bin, so more than n_fft + 2 filters always leave one empty;
    # checked first so that an absurd n_mels is refused without building anything.
    n_bins = 1 + r.n_fft // 2
    empty = (
        np.arange(n_bins, r.n_mels)
        if r.n_mels > r.n_fft + 2
        else empty_mel_filters(r.sample_rate, r.n_fft, r.n_mels, r.fmin, fmax)
    )
    if len(empty):
        raise _error(
            "n_mels",
            f"{_name('n_mels')} {r.n_mels} is too many for n_fft {r.n_fft} between {r.fmin:g} and {fmax:g} Hz:"
            f" {len(empty)} mel filter(s) would hold no FFT bin and stay empty (librosa warns of it);"
            f" lower {FLAGS['n_mels']}, raise {FLAGS['n_fft']} or widen fmin-fmax",
        )


# -- recipe files and command-line options ---------------------------------------------------------


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """The parameters a JSON or TOML recipe file holds (the keys of a manifest's ``recipe``).

    TOML when the name ends in .toml, JSON when it ends in .json, otherwise JSON if the text
    starts with ``{`` and TOML if not. Not yet checked as a recipe: `Recipe.from_dict` does that.

    Raises
    ------
    RecipeError
        The file cannot be read, is not valid JSON/TOML (the message names the line), repeats
        a key, or does not hold a table of parameters.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        check_input_file(path, "recipe file", MAX_RECIPE_BYTES, RecipeError)  # a FIFO would be read for ever
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist") from None
    except IsADirectoryError:
        raise RecipeError(
            f"{path} is a folder; --recipe takes a JSON or TOML file (`melset recipe STORE > recipe.json` writes one)"
        ) from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe file {path} is not UTF-8 text; write it as JSON or TOML") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file {path}: {(exc.strerror or str(exc)).lower()}") from None
    suffix = os.path.splitext(path)[1].lower()
    as_toml = suffix == ".toml" or (suffix != ".json" and not text.lstrip().startswith("{"))
    if as_toml:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            raise RecipeError(f"recipe file {path} is not valid TOML: {msg[:1].lower()}{msg[1:]}") from None
    else:
        if not text.strip():
            raise RecipeError(f"recipe file {path} is empty; `melset recipe > {path}` writes the default recipe")
        try:
            data = json.loads(text, object_pairs_hook=_no_repeats)
        except json.JSONDecodeError as exc:
            raise RecipeError(
                f"recipe file {path} is not valid JSON: {exc.msg.lower()} at line {exc.lineno}, column {exc.colno}"
            ) from None
        except RecipeError as exc:
            raise RecipeError(f"recipe file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path} must hold an object of recipe parameters, not a {type(data).__name__}")
    return data


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RecipeError(f"key {key!r} is given twice")
        out[key] = value
    return out


def recipe_from_options(file: str | os.PathLike | None = None, **overrides: Any) -> Recipe:
    """The recipe of a recipe file (or the default), with `overrides` (recipe keys) replacing its values.

    What ``melset extract --recipe FILE --n-mels 64 ...`` builds: pass only the options the
    user gave, so that a file's values stand where no flag says otherwise.

    Raises
    ------
    RecipeError
        The file or a value cannot be used; the message names the file or the option.
    """
    data = {} if file is None else read_recipe_file(file)
    try:
        return Recipe.from_dict({**data, **overrides})
    except RecipeError as exc:
        if getattr(exc, "key", None) in data and exc.key not in overrides:
            raise _error(exc.key, f"recipe file {os.fspath(file)}: {exc}") from None
        raise
