"""Each feature step against the library the notebook calls (librosa, scikit-learn)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from conftest import SAMPLE_AUDIO
from melset import audio, features, melscale
from melset.audio import mono_mix, sniffing
from melset.recipe import Recipe

librosa = pytest.importorskip("librosa")
sklearn_pre = pytest.importorskip("sklearn.preprocessing")

R = Recipe(dtype="float32")


@pytest.fixture(scope="module")
def folk():
    y, sr = librosa.load(SAMPLE_AUDIO / "200" / "200010.mp3")
    return y


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax",
    [(22050, 2048, 128, 0.0, None), (16000, 1024, 64, 50.0, 7000.0), (44100, 4096, 96, 0.0, None)],
)
def test_filterbank_equals_librosa(sr, n_fft, n_mels, fmin, fmax):
    ours = melscale.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)


def test_window_equals_scipy_periodic_hann():
    import scipy.signal

    np.testing.assert_allclose(
        features.hann_window(2048), scipy.signal.get_window("hann", 2048, fftbins=True), atol=1e-7
    )


@pytest.fixture(params=["ducc0", "scipy"])
def fft_backend(request, monkeypatch):
    """Each FFT library melset can use (ducc0 from the `fast` extra, else scipy.fft)."""
    if request.param == "scipy":
        monkeypatch.setattr(features, "ducc0", None)
    elif features.ducc0 is None:
        pytest.skip("ducc0 is not installed (the `fast` extra)")
    assert features.fft_backend() == request.param
    return request.param


def test_rfft_columns_equals_numpy_fft(fft_backend, folk):
    frames = np.lib.stride_tricks.sliding_window_view(folk[: 2048 * 64], 2048)[::512].T.astype(np.float32)
    ours = features.rfft_columns(np.ascontiguousarray(frames))
    assert ours.dtype == np.complex64 and ours.shape == (1025, frames.shape[1])
    ref = np.fft.rfft(frames.astype(np.float64), axis=0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6 * np.abs(ref).max())


def test_mel_power_equals_librosa_on_kept_frames(folk, fft_backend):
    ref = librosa.feature.melspectrogram(y=folk, sr=22050, n_mels=128)
    ours = features.mel_power(folk, R)
    assert ours.shape == (128, 1024)
    np.testing.assert_allclose(ours, ref[:, :1024], rtol=1e-3, atol=1e-6 * ref.max())
    # any later window of frames, as --whole-track uses
    later = features.mel_power(folk, R, start_frame=200)
    np.testing.assert_allclose(later, ref[:, 200:1224], rtol=1e-3, atol=1e-6 * ref.max())


def test_mel_power_pads_short_signal_like_librosa_centering():
    rng = np.random.default_rng(0)
    # between min_samples and samples_needed: the last frames reach into the centre padding
    y = rng.standard_normal(R.min_samples + 300).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=y, sr=22050, n_mels=128)
    assert ref.shape[1] == 1024
    np.testing.assert_allclose(features.mel_power(y, R), ref, rtol=1e-3, atol=1e-6 * ref.max())


def test_power_to_db_equals_librosa(folk):
    S = librosa.feature.melspectrogram(y=folk, sr=22050, n_mels=128)[:, :1024]
    np.testing.assert_allclose(features.power_to_db(S), librosa.power_to_db(S, ref=np.max), atol=1e-4)
    np.testing.assert_allclose(
        features.power_to_db(S, top_db=None), librosa.power_to_db(S, ref=np.max, top_db=None), atol=1e-4
    )


def test_minmax_equals_sklearn_including_constant_columns(folk):
    S = librosa.power_to_db(librosa.feature.melspectrogram(y=folk, sr=22050, n_mels=128)[:, :1024], ref=np.max)
    S[:, 10] = -80.0  # a silent frame: constant column
    S[:, 11] = S[:, 11].mean() + np.float32(1e-7) * np.arange(128, dtype=np.float32)  # near-constant
    ref = sklearn_pre.MinMaxScaler().fit_transform(S)
    ours = features.minmax_per_frame(S)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert np.all(ours[:, 10] == 0.0) and np.isfinite(ours).all()


def test_digital_silence_and_dc_offset_give_no_nan():
    for y in (np.zeros(R.samples_needed, np.float32), np.full(R.samples_needed, 0.25, np.float32)):
        x = features.log_mel(y, R)
        assert x.shape == (128, 1024) and np.isfinite(x).all()
        # MinMaxScaler's float32 arithmetic (ours and scikit-learn's) may land an ulp past 1
        assert x.min() >= 0.0 and x.max() <= 1.0 + 2 * np.finfo(np.float32).eps


def test_decode_equals_librosa_load_on_needed_prefix():
    path = SAMPLE_AUDIO / "200" / "200047.mp3"
    ref, sr = librosa.load(path)
    d = audio.decode(path, 22050, R.input_frames_needed, decoder="soundfile")
    assert not d.reached_end and d.native_rate == 44100 and d.channels == 2 and d.backend == "soundfile"
    # bit-identical over every sample the kept frames use
    assert np.array_equal(d.samples[: R.samples_needed], ref[: R.samples_needed])
    # decoding only ~25 of 30 seconds
    assert len(d.samples) < 0.9 * len(ref)


needs_libmpg123 = pytest.mark.skipif(
    not mono_mix.available(), reason="the system has no libmpg123 (libsndfile decodes every MP3 there)"
)


def _channels(path) -> int:
    try:
        return sf.info(path).channels
    except sf.LibsndfileError:  # the sample's broken files
        return 0


@needs_libmpg123
@pytest.mark.parametrize("whole", [False, True], ids=["kept frames", "whole file"])
def test_stereo_mp3_mixed_in_libmpg123_equals_librosa_load(whole):
    stereo = [p for p in sorted(SAMPLE_AUDIO.rglob("*.mp3")) if _channels(p) == 2]
    assert len(stereo) >= 5
    for path in stereo:
        ref, _ = librosa.load(path)
        d = audio.decode(path, 22050, None if whole else R.input_frames_needed, decoder="auto")
        assert audio.decode(path, 22050, R.input_frames_needed, decoder="soundfile").backend == "soundfile"
        assert d.backend == "mpg123" and d.channels == 2 and (d.reached_end or not whole)
        n = len(ref) if d.reached_end else R.samples_needed
        assert len(d.samples) == len(ref) if d.reached_end else len(d.samples) >= n
        # the channels are summed before the synthesis filterbank instead of after: rounding apart
        np.testing.assert_allclose(d.samples[:n], ref[:n], rtol=0, atol=5e-6, err_msg=str(path))


def test_mono_mix_declining_a_file_leaves_it_to_libsndfile(monkeypatch):
    path = SAMPLE_AUDIO / "200" / "200047.mp3"
    monkeypatch.setattr(mono_mix, "decode", lambda *a: None)
    d = audio.decode(path, 22050, R.input_frames_needed, decoder="auto")
    assert d.backend == "soundfile"
    assert np.array_equal(d.samples[: R.samples_needed], librosa.load(path)[0][: R.samples_needed])


@needs_libmpg123
def test_mono_mix_declines_what_it_was_not_asked_for(tmp_path):
    path = str(SAMPLE_AUDIO / "200" / "200047.mp3")
    assert mono_mix.decode(path, 1000, 48000) is None  # another rate than libsndfile reported
    assert mono_mix.decode(str(tmp_path / "gone [1].mp3"), 1000, 44100) is None
    assert len(mono_mix.decode(path, 1000, 44100)) == 1000
    assert len(mono_mix.decode(path, 0, 44100)) == 0


def test_to_mono_equals_librosa():
    rng = np.random.default_rng(1)
    for channels in (2, 3, 6):
        x = rng.standard_normal((5000, channels)).astype(np.float32)
        assert np.array_equal(audio.to_mono(x), librosa.to_mono(x.T))


@needs_libmpg123
def test_auto_mixes_only_layer_iii_so_stereo_layer_ii_keeps_both_channels(tmp_path):
    """libmpg123's mono mix keeps only the left channel of Layer I and II streams."""
    rate = 44100
    t = np.arange(5 * rate) / rate
    pcm = (np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 1250 * t)]) * 16000).astype(np.int16)
    path = tmp_path / "layer2 [stereo].mp3"
    _encode_stereo(path, pcm.T, rate, codec="mp2", container="mp2", bit_rate=192000)
    mixed = audio.decode(path, 22050, None, decoder="auto")
    plain = audio.decode(path, 22050, None, decoder="soundfile")
    assert mixed.backend == "soundfile" and np.array_equal(mixed.samples, plain.samples)


@needs_libmpg123
def test_auto_file_replaced_while_mixed_is_decoded_from_libsndfiles_handle(tmp_path, monkeypatch):
    """libmpg123 opens the path a second time: a file swapped in since libsndfile opened it
    must not be decoded against the first file's header."""
    import shutil

    first, second = SAMPLE_AUDIO / "200" / "200047.mp3", SAMPLE_AUDIO / "200" / "200010.mp3"
    path = tmp_path / "track [1].mp3"
    shutil.copy(first, path)
    mix = mono_mix.decode

    def replaced_then_mixed(*args):
        shutil.copy(second, tmp_path / "new.mp3")
        os.replace(tmp_path / "new.mp3", path)
        return mix(*args)

    monkeypatch.setattr(mono_mix, "decode", replaced_then_mixed)
    d = audio.decode(path, 22050, R.input_frames_needed, decoder="auto")
    expected = audio.decode(first, 22050, R.input_frames_needed, decoder="soundfile")
    assert d.backend == "soundfile" and np.array_equal(d.samples, expected.samples)


def _encode_stereo(path, pcm: np.ndarray, rate: int, codec: str, container: str, bit_rate: int, options=None):
    """Encode int16 samples of shape (n, 2) with PyAV's FFmpeg."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w", format=container) as c:
        s = c.add_stream(codec, rate=rate, layout="stereo")
        s.bit_rate = bit_rate
        s.codec_context.options = options or {}
        for i in range(0, len(pcm), 1152):
            frame = av.AudioFrame.from_ndarray(pcm[i : i + 1152].reshape(1, -1).copy(), format="s16", layout="stereo")
            frame.sample_rate = rate
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _plain_stereo_mp3(path, rate: int) -> None:
    """3 s of L/R (not joint) stereo from LAME: a silent left channel, a tone and noise right."""
    n = 3 * rate
    t = np.arange(n) / rate
    right = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.random.default_rng(0).standard_normal(n)
    pcm = (np.stack([np.zeros(n), right], axis=1) * 32767).astype(np.int16)
    bit_rate = 128000 if rate > 24000 else 64000
    _encode_stereo(path, pcm, rate, "libmp3lame", "mp3", bit_rate, {"joint_stereo": "0"})


def _short_blocks_on_the_left(path, granule: int = 0) -> int:
    """Give the left channel short blocks in `granule` of every third frame (its silence
    decodes to silence in any window), counting the frames changed. Bit positions from
    ISO 11172-3 / 13818-3 2.4.1.7, written out here rather than taken from melset."""
    data = bytearray(path.read_bytes())
    tag = 10 + (data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]) if data[:3] == b"ID3" else 0
    pos, frames, changed = data.find(b"\xff", tag), 0, 0
    while pos >= 0 and pos + 4 <= len(data):
        length = sniffing._frame_length(bytes(data[pos : pos + 4]))
        if not length:
            pos = data.find(b"\xff", pos + 1)
            continue
        mpeg1 = (data[pos + 1] >> 3) & 3 == 3
        # window_switching_flag of the granule's left channel: after main_data_begin,
        # private_bits, (scfsi,) two 59-bit blocks per MPEG-1 granule, then part2_3_length,
        # big_values, global_gain, scalefac_compress
        at = 8 * (pos + 4 + (2 if data[pos + 1] & 1 == 0 else 0)) + (20 + granule * 2 * 59 + 33 if mpeg1 else 10 + 38)
        if frames % 3 == 1 and data[pos + 3] >> 6 == 0:  # a stereo (not joint) frame
            bits = [1, 1, 0, 0] + [0] * 19  # switching on, block_type 2 (short), not mixed, zero tables and gains
            for i, bit in enumerate(bits):
                byte, shift = (at + i) // 8, 7 - (at + i) % 8
                data[byte] = data[byte] & ~(1 << shift) | bit << shift
            changed += 1
        frames += 1
        pos += length
    path.write_bytes(bytes(data))
    return changed


@needs_libmpg123
@pytest.mark.parametrize(
    "rate, granule", [(44100, 0), (44100, 1), (22050, 0)], ids=["MPEG-1 granule 0", "MPEG-1 granule 1", "MPEG-2"]
)
def test_auto_leaves_a_stream_whose_channels_switch_windows_apart_to_libsndfile(tmp_path, rate, granule, monkeypatch):
    """The mix transforms the summed spectrum with the left channel's window: a granule whose
    channels use different windows (legal in L/R stereo) must be decoded by libsndfile."""
    path = tmp_path / f"windows apart [{rate}].mp3"
    _plain_stereo_mp3(path, rate)
    assert _short_blocks_on_the_left(path, granule) >= 20
    plain = audio.decode(path, 22050, None, decoder="soundfile")
    d = audio.decode(path, 22050, None, decoder="auto")
    assert d.backend == "soundfile" and np.array_equal(d.samples, plain.samples)

    # the file does tell the mix apart: unchecked, libmpg123's mix is far from librosa's
    monkeypatch.setattr(mono_mix, "_same_block_types", lambda *a: True)
    wrong = audio.decode(path, 22050, None, decoder="auto")
    assert wrong.backend == "mpg123" and np.abs(wrong.samples - plain.samples).max() > 0.05


@needs_libmpg123
@pytest.mark.parametrize("rate", [44100, 22050], ids=["MPEG-1", "MPEG-2"])
def test_auto_mixes_a_plain_stereo_stream_whose_windows_agree(tmp_path, rate):
    path = tmp_path / "plain.mp3"
    _plain_stereo_mp3(path, rate)
    d = audio.decode(path, 22050, None, decoder="auto")
    plain = audio.decode(path, 22050, None, decoder="soundfile")
    assert d.backend == "mpg123"
    np.testing.assert_allclose(d.samples, plain.samples, rtol=0, atol=5e-6)


@needs_libmpg123
def test_mono_mix_declines_when_its_frame_index_misses_the_last_frame_read(monkeypatch):
    """The side information is checked only in indexed frames: an index that stopped short
    (its last entry is not the frame libmpg123 read last) cannot vouch for the file."""
    lib = mono_mix._load()

    class IndexStoppedShort:
        def __getattr__(self, name):
            return getattr(lib, name)

        def mpg123_framepos_64(self, handle):
            return lib.mpg123_framepos_64(handle) + 1

    path = str(SAMPLE_AUDIO / "200" / "200047.mp3")
    assert mono_mix.decode(path, R.input_frames_needed(44100), 44100) is not None
    monkeypatch.setattr(mono_mix, "_load", IndexStoppedShort)
    assert mono_mix.decode(path, R.input_frames_needed(44100), 44100) is None


_ID3V1 = b"TAG" + bytes(range(125))


@needs_libmpg123
@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda raw: raw[:-10] + _ID3V1, id="last frame cut, then an ID3v1 tag"),
        pytest.param(lambda raw: raw[:-200] + _ID3V1, id="cut past the tag's length, then an ID3v1 tag"),
        pytest.param(lambda raw: raw[:-128] + b"TAG" + raw[-125:], id="audio bytes that read TAG"),
        pytest.param(lambda raw: raw + _ID3V1, id="an ID3v1 tag"),
        pytest.param(lambda raw: raw[:-10], id="last frame cut"),
    ],
)
def test_the_mix_reads_the_end_of_a_file_as_libsndfile_does(tmp_path, edit):
    """libmpg123 is fed the file from memory (its own reader makes two read() calls a frame);
    every byte, as its reader reads them: a last frame cut short takes its missing bytes from
    a trailing ID3v1 tag, and one the tag cannot complete is an error, not the end."""
    path = tmp_path / "edited [1].mp3"
    path.write_bytes(edit((SAMPLE_AUDIO / "200" / "200047.mp3").read_bytes()))
    try:
        plain = audio.decode(path, 22050, None, decoder="soundfile")
    except audio.AudioError as exc:
        with pytest.raises(audio.AudioError) as mixed:
            audio.decode(path, 22050, None, decoder="auto")
        assert str(mixed.value) == str(exc)
        return
    mixed = audio.decode(path, 22050, None, decoder="auto")
    assert (len(mixed.samples), mixed.duration_s) == (len(plain.samples), plain.duration_s)
    np.testing.assert_allclose(mixed.samples, plain.samples, rtol=0, atol=5e-6)


@needs_libmpg123
def test_the_mix_reads_no_more_of_a_file_than_it_decodes(tmp_path):
    """A recording of many gigabytes: the mix holds the blocks it fed, not the file."""
    path = tmp_path / "huge.mp3"
    path.write_bytes((SAMPLE_AUDIO / "200" / "200047.mp3").read_bytes())
    with open(path, "r+b") as f:
        f.truncate(64 << 30)  # sparse: no disk used
    assert len(mono_mix.decode(str(path), 44100, 44100)) == 44100
