"""Options generated from the defaults they show (the recipe's from Recipe(), train's from TrainConfig's fields), and --device's choice."""

from __future__ import annotations

import dataclasses
import typing

import click
from click.core import ParameterSource

from melset.recipe import DECODERS, DTYPES, ON_SHORT, SCALINGS, Recipe, recipe_from_options
from melset.train_config import DEVICES, TrainConfig, option_flag

_DEVICE = click.Choice(DEVICES)


class _NumberOrNone(click.ParamType):
    name = "number|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() == "none":
            return None
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor none", param, ctx)


def _recipe_options(f):
    """extract's recipe flags, declared here once; each defaults to the notebook's value (Recipe())."""
    d, number = Recipe(), _NumberOrNone()
    options = [
        ("--sample-rate", int, d.sample_rate, "Resample to this rate (Hz), 1,000-192,000."),
        ("--n-mels", int, d.n_mels, "Mel bands."),
        ("--n-fft", int, d.n_fft, "STFT window length (samples, Hann)."),
        ("--hop-length", int, d.hop_length, "STFT hop (samples)."),
        ("--frames", int, d.n_frames, "Frames kept from each clip's start."),
        ("--fmin", float, d.fmin, "Lowest mel frequency (Hz)."),
        ("--fmax", number, d.fmax, "Highest mel frequency (Hz); none: sample_rate / 2."),
        ("--top-db", number, d.top_db, "Floor below the clip's peak (dB); none keeps every level."),
        ("--amin", float, d.amin, "Smallest power that power_to_db takes."),
        (
            "--scaling",
            click.Choice(SCALINGS),
            d.scaling,
            "minmax-per-frame: each frame to [0, 1] (the notebook's MinMaxScaler); none: dB below the clip's peak.",
        ),
        ("--dtype", click.Choice(DTYPES), d.dtype, "Stored precision."),
        (
            "--on-short",
            click.Choice(ON_SHORT),
            d.on_short,
            "Clips shorter than the kept frames: skip them (too_short) or pad with silence.",
        ),
        (
            "--decoder",
            click.Choice(DECODERS),
            d.decoder,
            "auto: libsndfile as librosa.load, stereo MP3 mixed to mono inside libmpg123 where the stream allows "
            "it exactly (decode and resample 9-10% faster, rounding apart), FFmpeg (PyAV) for what libsndfile cannot "
            "read. soundfile: librosa's samples bit for bit. av: FFmpeg for every file.",
        ),
    ]
    for flag, kind, default, text in reversed(options):
        dest = "n_frames" if flag == "--frames" else flag[2:].replace("-", "_")
        f = click.option(flag, dest, type=kind, default=default, show_default=True, help=text)(f)
    return click.option(
        "--recipe",
        "recipe_file",
        type=click.Path(),
        default=None,
        help="Recipe file: JSON or TOML with the keys `melset recipe` prints; recipe flags given beside it override it.",
    )(f)


def _recipe(recipe_file, **values) -> Recipe:
    """The recipe file's recipe (or the default) with the recipe flags the user gave on top."""
    ctx = click.get_current_context()
    given = {
        k: v
        for k, v in values.items()
        if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    return recipe_from_options(recipe_file, **given)


def _train_options(f):
    """train's hyper-parameter options, one per TrainConfig field, in its order (see melset.train_config.option)."""
    types = typing.get_type_hints(TrainConfig)
    for field in reversed(dataclasses.fields(TrainConfig)):
        choices = field.metadata.get("choices")
        f = click.option(
            option_flag(field.name),
            field.name,
            type=click.Choice(choices) if choices else types[field.name],
            default=field.default,
            show_default=True,
            help=field.metadata.get("help"),
        )(f)
    return f
