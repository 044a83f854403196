"""One track through the recipe: decode what the kept frames need, compute the log-mel.

`process` is what every engine runs per track. It never raises for a bad file: it returns
a `TrackResult` whose status says what happened and whose error says why, in words.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from melset.errors import MelsetError, UsageError
from melset.location import MISSING_MARK, Fetch
from melset.recipe import Recipe
from melset.vocab import FAILED, MISSING, OK, TOO_SHORT


@dataclass(frozen=True)
class TrackResult:
    status: str  # one of vocab.STATUSES
    mel: np.ndarray | None  # (n_mels, n_frames) in recipe.dtype when ok
    error: str  # reason in words; "" when ok
    duration_s: float  # the file's duration (NaN when unknown)
    decoder: str = ""  # the backend that decoded it: "soundfile" (libsndfile), "mpg123" (libmpg123's mono mix) or "av"

    @classmethod
    def failed(cls, reason: str, duration_s: float = math.nan) -> TrackResult:
        return cls(FAILED, None, reason, duration_s)

    @classmethod
    def missing(cls, where: str) -> TrackResult:
        return cls(MISSING, None, f"file not found: {where}", math.nan)


def process(path: str | os.PathLike | Fetch, recipe: Recipe) -> TrackResult:
    """Run the recipe on one file: a local path, or a `Fetch` (a zip archive's member, an
    object at a URL, a file with a checksum to check), read into memory first. Never raises
    for a bad file."""
    # here, not at the top: the driver unpickles TrackResults and needs neither
    from melset import audio

    if isinstance(path, Fetch):
        path = _fetch(path)
        if isinstance(path, TrackResult):
            return path
    try:
        decoded = audio.decode(path, recipe.sample_rate, recipe.input_frames_needed, recipe.decoder)
    except FileNotFoundError:
        return TrackResult.missing(os.fspath(path))
    except audio.AudioError as exc:
        return _fetch_failed(path) or TrackResult.failed(str(exc))
    except MemoryError:
        return TrackResult.failed("out of memory while decoding")
    failed = _fetch_failed(path)
    if failed:
        return failed
    return from_samples(decoded.samples, recipe, decoded.duration_s, decoded.backend)


def _fetch(item: Fetch):
    """The file as an `audio.InMemory` (its bytes) or an `audio.Ranged` (read by ranges as the
    decoders ask), or the TrackResult that says why there is none."""
    from melset.audio import InMemory, Ranged
    from melset.location import read_bytes
    from melset.location.checksums import mismatch
    from melset.location.remote import FetchError, read_range

    name = item.locator.split("::", 1)[0]  # a member: its own name, for its extension
    if item.problem:  # read ahead by the driver, and that failed
        if item.problem == MISSING_MARK:
            return TrackResult.missing(item.locator)
        return TrackResult.failed(item.problem)
    if item.ranged:
        return Ranged(name, item.size, lambda start, end: read_range(item.locator, item.options, start, end))
    try:
        data = item.data if item.data is not None else read_bytes(item.locator, item.options)
    except FileNotFoundError:
        return TrackResult.missing(item.locator)
    except FetchError as exc:
        return TrackResult.failed(str(exc))
    if item.sha1:
        problem = mismatch(data, item.sha1, item.checksums)
        if problem:
            return TrackResult.failed(problem)
    return InMemory(name, data)


def _fetch_failed(src) -> TrackResult | None:
    """The failed row of a file read by ranges whose reading failed mid-decode (which the
    decoder saw as the file's end), or None."""
    from melset.audio import Ranged
    from melset.location.remote import FetchError

    error = src.error if isinstance(src, Ranged) else None
    if error is None:
        return None
    if isinstance(error, FileNotFoundError):
        return TrackResult.missing(src.name)
    return TrackResult.failed(str(error) if isinstance(error, FetchError) else f"reading failed: {error}")


def from_samples(y: np.ndarray, recipe: Recipe, duration_s: float, backend: str = "") -> TrackResult:
    """The recipe's matrix of mono float32 samples already at recipe.sample_rate, as `process`
    stores it: too short (on_short skip), failed (values out of range) or ok. Never raises."""
    from melset import features

    if len(y) < recipe.min_samples and recipe.on_short == "skip":
        frames = features.n_centred_frames(len(y), recipe.hop_length, recipe.n_fft)
        return TrackResult(
            TOO_SHORT,
            None,
            f"{duration_s:.2f} s of audio gives {frames} frames; the recipe keeps {recipe.n_frames} "
            f"(at least {recipe.min_samples / recipe.sample_rate:.2f} s)",
            duration_s,
            backend,
        )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        mel = features.log_mel(y, recipe)
    problem = out_of_range(mel, recipe, recipe.dtype)
    if problem:
        peak = float(np.max(np.abs(y))) if len(y) else 0.0
        return TrackResult.failed(
            f"sample values out of range: the loudest sample is {peak:.3g} (audio lies within ±1), "
            f"so the spectrogram {problem}",
            duration_s,
        )
    return TrackResult(OK, mel.astype(recipe.dtype), "", duration_s, backend)


def log_mel(y: np.ndarray, sr: int, recipe: Recipe | dict | None = None) -> np.ndarray:
    """The recipe's log-mel matrix of samples already in memory, byte for byte what `melset
    extract` stores for the same samples.

    The samples are resampled to ``recipe.sample_rate`` with soxr 'HQ' as the decode path
    resamples a whole file (librosa.load's resampling), then go through the same steps as
    every extracted track: the first ``n_frames`` centred frames, the too-short and padding
    rules, the range checks and the cast to ``recipe.dtype``.

    Parameters
    ----------
    y : numpy.ndarray
        Mono samples within ±1, shape (n,), as ``librosa.load(path, sr=None)`` or
        ``soundfile.read(path, dtype="float32")`` (channels averaged) gives them. Computed in
        float32, as melset decodes: float64 samples are rounded to float32 first.
    sr : int
        The rate of `y` in Hz.
    recipe : Recipe or dict, optional
        The recipe (``Recipe()`` by default); a dict such as ``Store.recipe`` is read with
        ``Recipe.from_dict``.

    Returns
    -------
    numpy.ndarray
        (recipe.n_mels, recipe.n_frames) in ``recipe.dtype``.

    Raises
    ------
    MelsetError
        `y` is not mono float samples, `sr` is not a positive whole number, the samples are
        shorter than the recipe keeps (``on_short="skip"``), or they are not finite or out of
        range; the sentence says which and what to do.

    Examples
    --------
    >>> import librosa, melset                                    # doctest: +SKIP
    >>> y, sr = librosa.load("000002.mp3", sr=None)               # doctest: +SKIP
    >>> melset.log_mel(y, sr).shape                               # doctest: +SKIP
    (128, 1024)
    """
    import numbers

    from melset.audio.decoded import AudioError, finish

    recipe = Recipe() if recipe is None else recipe if isinstance(recipe, Recipe) else Recipe.from_dict(recipe)
    y = np.asarray(y)
    if y.dtype.kind != "f":
        raise UsageError(
            f"log_mel needs float samples within ±1 (as librosa.load or soundfile.read(dtype='float32') gives), "
            f"not {y.dtype}"
        )
    if y.ndim != 1:
        raise UsageError(
            f"log_mel needs mono samples, one dimension; these have shape {y.shape}: average the channels first "
            "(librosa.to_mono, or melset.audio.to_mono for soundfile's (n, channels))"
        )
    if isinstance(sr, bool) or not isinstance(sr, numbers.Integral) or sr <= 0:
        raise UsageError(f"log_mel needs sr, the samples' rate in Hz, as a positive whole number, not {sr!r}")
    if not len(y):
        raise UsageError("log_mel needs samples: the array is empty")
    duration_s = len(y) / int(sr)
    try:
        y = finish(y.astype(np.float32, copy=False), int(sr), recipe.sample_rate, reached_end=True)
    except AudioError as exc:
        raise MelsetError(f"log_mel cannot use these samples: {exc}") from None
    result = from_samples(y, recipe, duration_s)
    if result.status == TOO_SHORT:
        raise MelsetError(
            f"the samples are too short for the recipe: {result.error}; pass a longer array, "
            'or use a recipe with on_short="pad"'
        )
    if result.status != OK:
        raise MelsetError(f"log_mel cannot use these samples: {result.error}")
    return result.mel


# float32 arithmetic of MinMaxScaler and power_to_db lands a few ulps outside the exact range
_RANGE_SLACK = 1e-3


def value_range(recipe: Recipe) -> tuple[float, float]:
    """The interval every stored value of a recipe lies in: [0, 1] scaled, [-top_db, 0] in dB
    (-inf when top_db is None)."""
    if recipe.scaling != "none":
        return 0.0, 1.0
    return (-math.inf if recipe.top_db is None else -float(recipe.top_db)), 0.0


def out_of_range(mel: np.ndarray, recipe: Recipe, stored: str | np.dtype | None = None) -> str | None:
    """What is wrong with a computed matrix once stored in `stored` (by default its own dtype),
    in words, or None when every value is finite and within the recipe's range."""
    stored = np.dtype(stored or mel.dtype)
    if mel.dtype == np.float16:
        mel = mel.astype(np.float32)  # exact, and numpy's float16 reductions are ~20x slower (1.4 ms a clip)
    # Casting rounds monotonically, so the stored extremes are the cast extremes: checking them
    # checks every stored value without casting the matrix (0.3 ms a clip for float16). NaN
    # propagates through min and max, and a value past the stored type's largest becomes inf.
    with np.errstate(over="ignore", invalid="ignore"):
        low, high = (float(stored.type(x)) for x in (mel.min(), mel.max()))
        if not (math.isfinite(low) and math.isfinite(high)):
            bad = int(np.count_nonzero(~np.isfinite(mel.astype(stored))))
            return f"has {bad} NaN or infinite values in {stored}"
    lo, hi = value_range(recipe)
    if low < lo - _RANGE_SLACK or high > hi + _RANGE_SLACK:
        return f"has values from {low:.4g} to {high:.4g}, outside [{lo:g}, {hi:g}]"
    return None


def whole_track(path: str | os.PathLike, recipe: Recipe) -> np.ndarray:
    """Consecutive non-overlapping n_frames windows over the whole file: (windows, n_mels, n_frames).

    Window w holds frames [w * n_frames, (w + 1) * n_frames) of the file's centred STFT,
    each scaled on its own as the recipe scales one clip. Raises audio.AudioError.
    """
    from melset import audio, features

    decoded = audio.decode(path, recipe.sample_rate, None, recipe.decoder)
    y = decoded.samples
    total = features.n_centred_frames(len(y), recipe.hop_length, recipe.n_fft)
    n_windows = max(1, total // recipe.n_frames)
    if total < recipe.n_frames and recipe.on_short == "skip":
        raise audio.AudioError(
            f"{decoded.duration_s:.2f} s of audio is shorter than one window of {recipe.n_frames} frames"
        )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = [features.log_mel(y, recipe, start_frame=w * recipe.n_frames) for w in range(n_windows)]
        mels = np.stack(out)
    problem = out_of_range(mels, recipe, recipe.dtype)
    if problem:
        raise audio.AudioError(f"sample values out of range: the spectrogram {problem}")
    return mels.astype(recipe.dtype)
