"""FFmpeg through PyAV (the `av` extra): M4A/AAC and the other formats libsndfile cannot read."""

from __future__ import annotations

import numpy as np

from melset.audio.decoded import AudioError, Decoded, FileBytes, clean, finish, open_binary, to_mono
from melset.audio.sniffing import sniff


def decode(path: str | FileBytes, sample_rate: int, max_frames_at, libsndfile_said: str | None = None) -> Decoded:
    try:
        import av
    except ImportError:
        raise AudioError(
            f"{sniff(path).what}: libsndfile cannot read it; install melset[av] (PyAV/FFmpeg) to try FFmpeg"
        ) from None
    try:
        source = open_binary(path) if isinstance(path, FileBytes) else path
        with av.open(source, metadata_errors="ignore") as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError("no audio stream in the file")
            stream = streams[0]
            native = stream.codec_context.sample_rate or stream.rate
            channels = stream.codec_context.channels
            want = None if max_frames_at is None else int(max_frames_at(native))
            chunks, got = [], 0
            for frame in container.decode(stream):
                # planar float: (channels, n)
                arr = frame.to_ndarray()
                if not frame.format.is_planar:
                    arr = arr.reshape(-1, frame.layout.nb_channels).T
                chunks.append(np.ascontiguousarray(arr.T, dtype=np.float32))
                got += arr.shape[1]
                if want is not None and got >= want:
                    break
            header_frames = None
            if stream.duration is not None and stream.time_base is not None:
                header_frames = float(stream.duration * stream.time_base) * native
    except AudioError:
        raise
    except Exception as exc:  # FFmpeg raises many kinds; all mean "could not decode"
        kind = sniff(path)
        said = f"libsndfile: {libsndfile_said}; FFmpeg: {clean(exc)}" if libsndfile_said else f"FFmpeg: {clean(exc)}"
        raise AudioError(kind.reason or f"{kind.what}: cannot be decoded ({said})") from None
    if got == 0:
        raise AudioError("no audio frames could be decoded")
    data = np.concatenate(chunks)
    reached_end = want is None or got < want
    if want is not None:
        data = data[:want]
    duration = len(data) / native if reached_end or not header_frames else header_frames / native
    y = finish(to_mono(data), native, sample_rate, reached_end)
    return Decoded(y, sample_rate, native, max(channels, data.shape[1]), duration, reached_end, "av")
