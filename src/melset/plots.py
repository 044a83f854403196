"""Pictures: a stored spectrogram with time and frequency axes, confusion matrices, training curves.

Names that come from data (track ids, genres, titles) are drawn as they are: PLAIN turns
off matplotlib's mathtext, which would read `$...$` in them as markup (and fail on most).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from melset.errors import UsageError  # noqa: E402
from melset.melscale import hz_to_mel  # noqa: E402
from melset.outputs import file_holds, output_file, replacing  # noqa: E402
from melset.vocab import TRAINING, VALIDATION  # noqa: E402

PLAIN = {"parse_math": False}  # text properties for any text that comes from data


def spectrogram_png(
    mel: np.ndarray,
    out: str | os.PathLike,
    sample_rate: int,
    hop_length: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    title: str = "",
    start_s: float = 0.0,
    scaled: bool = True,
) -> str:
    """Save a (n_mels, frames) matrix like librosa's specshow(x_axis='time', y_axis='mel').

    The axes follow the recipe: frame t sits at start_s + t * hop_length / sample_rate, and
    the bands run from fmin to fmax (None: sample_rate / 2) on the mel scale. `scaled` says
    whether values are the per-frame [0, 1] scaling or dB below the clip's peak.
    """
    fmax = fmax or sample_rate / 2
    n_mels, n_frames = mel.shape
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    end_s = start_s + n_frames * hop_length / sample_rate
    img = ax.imshow(
        np.asarray(mel, dtype=np.float32),
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        extent=(start_s, end_s, 0, n_mels),
        cmap="magma",
    )
    positions, labels = mel_ticks(n_mels, fmin, fmax)
    ax.set_yticks(positions, labels)
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Frequency (Hz, mel scale)")
    if title:
        ax.set_title(title, **PLAIN)
    fig.colorbar(img, ax=ax, label="scaled log-mel" if scaled else "dB below the clip's peak")
    fig.tight_layout()
    return _save(fig, out)


def mel_ticks(n_mels: int, fmin: float, fmax: float) -> tuple[list[float], list[str]]:
    """Frequency ticks for a mel axis of n_mels bands from fmin to fmax: both ends and the
    octaves of 128 Hz between them, placed on the mel scale (band units from the bottom)."""
    lo, hi = float(hz_to_mel(fmin)), float(hz_to_mel(fmax))

    def at(f: float) -> float:
        return (float(hz_to_mel(f)) - lo) / (hi - lo) * n_mels

    inner = [f for f in (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536) if fmin < f < fmax]
    # octaves closer than 5% of the axis to an end would print over the end's label
    inner = [f for f in inner if 0.05 * n_mels < at(f) < 0.95 * n_mels]
    freqs = [fmin, *inner, fmax]
    return [at(f) for f in freqs], [f"{f:g}" for f in freqs]


def confusion_png(matrix: np.ndarray, classes: Sequence[str], out: str | os.PathLike, title: str = "") -> str:
    """Counts with row-normalised colour (recall per true class)."""
    matrix = np.asarray(matrix)
    n = len(classes)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    totals = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    img = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", **PLAIN)
    ax.set_yticks(range(n), classes, **PLAIN)
    ax.set_xlabel("Predicted genre")
    ax.set_ylabel("True genre")
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=8,
            )
    if title:
        ax.set_title(title, **PLAIN)
    fig.colorbar(img, ax=ax, label="fraction of true class")
    fig.tight_layout()
    return _save(fig, out)


def curves_png(epochs: list[dict], out: str | os.PathLike, title: str = "", multi_label: bool = False) -> str:
    """Loss and accuracy per epoch, training and validation (multi-label: BCE and precision at 1)."""
    x = [e["epoch"] for e in epochs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for key, label in (("train_loss", TRAINING), ("val_loss", VALIDATION)):
        a1.plot(x, [e.get(key) for e in epochs], marker="o", label=label)
    for key, label in (("train_accuracy", TRAINING), ("val_accuracy", VALIDATION)):
        a2.plot(x, [e.get(key) for e in epochs], marker="o", label=label)
    a1.set(xlabel="epoch", ylabel="binary cross-entropy" if multi_label else "cross-entropy loss")
    a2.set(xlabel="epoch", ylabel="top genre is one of the track's" if multi_label else "accuracy", ylim=(0, 1.02))
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    if title:
        fig.suptitle(title, **PLAIN)
    fig.tight_layout()
    return _save(fig, out)


PICTURE_FORMATS = ("png", "svg", "pdf")  # what a picture's name may end with (none: png)


def picture_format(out: str | os.PathLike, option: str = "the picture") -> str:
    """The format a picture named `out` is drawn in: its extension (any case) when it is one of
    PICTURE_FORMATS, png without one. Raises UsageError for another extension."""
    ext = os.path.splitext(os.path.basename(os.fspath(out)))[1].lower()
    fmt = ext[1:] or PICTURE_FORMATS[0]
    if fmt not in PICTURE_FORMATS:
        names = ", ".join(f".{f}" for f in PICTURE_FORMATS)
        raise UsageError(f"{option} {os.fspath(out)}: melset draws pictures as {names}; give a name that ends in one")
    return fmt


# melset's own mark on every picture it draws: a user's own matplotlib figure has none and is never replaced
DRAWN_BY = "melset"
_MARKS = {
    "png": ("tEXt", b"Software\x00" + DRAWN_BY.encode() + b" "),  # a tEXt chunk before the image data
    "pdf": ("tail", b"/Creator (" + DRAWN_BY.encode() + b" "),  # the document info, at the end
    "svg": ("head", b"<dc:title>" + DRAWN_BY.encode() + b" "),  # the metadata, after the header
}


def _metadata(fmt: str) -> dict[str, str]:
    from melset import __version__

    mark = f"{DRAWN_BY} {__version__}"
    return {"png": {"Software": mark}, "pdf": {"Creator": mark, "Producer": mark}, "svg": {"Creator": mark}}[fmt]


def _png_software(path: str) -> bytes | None:
    """The PNG's tEXt "Software" chunk (key, NUL, value) before its image data, or None."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            for _ in range(64):
                head = f.read(8)
                if len(head) < 8:
                    return None
                size, kind = int.from_bytes(head[:4], "big"), head[4:]
                if kind in (b"IDAT", b"IEND") or size > 65536:
                    return None
                data = f.read(size)
                f.read(4)  # the chunk's CRC
                if kind == b"tEXt" and data.startswith(b"Software\x00"):
                    return data
    except OSError:
        return None
    return None


def drawn_by_melset(path: str) -> bool:
    """Whether the picture at `path` carries melset's mark (see _metadata): a PNG's Software
    chunk, a PDF's Creator, an SVG's creator. Matplotlib alone is not enough: a user's own
    figure is drawn by matplotlib too."""
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError:
        return False
    if magic.startswith(b"\x89PNG"):
        software = _png_software(path)
        return software is not None and software.startswith(_MARKS["png"][1])
    if magic.startswith(b"%PDF"):
        return file_holds(path, (_MARKS["pdf"][1],), span=4096, head=False)
    if magic.startswith((b"<?xml", b"<svg")):
        return file_holds(path, (_MARKS["svg"][1],), span=4096, tail=False)
    return False


def picture_target(out: str | os.PathLike, option: str = "the picture", runs: bool = False) -> tuple[str, str]:
    """The resolved path and format of a picture to draw at `out`, checked (see
    melset.outputs.output_file; `runs`: refuse a place inside a training run too)."""
    real = output_file(out, option, drawn_by_melset, "picture.png", runs=runs, verb="drawn")
    return real, picture_format(out, option)


def _save(fig, out) -> str:
    try:
        if hasattr(out, "write"):  # a file object (the HTML report embeds pictures)
            fig.savefig(out, format="png", metadata=_metadata("png"))
            return ""
        real, fmt = picture_target(out)
        with replacing(real) as tmp:
            fig.savefig(tmp, format=fmt, metadata=_metadata(fmt))
        return os.fspath(out)
    finally:
        plt.close(fig)
