"""melset: turn an audio collection (FMA and friends) into a training-ready log-mel dataset.

The data's path, one module per step:
    fma / catalog  -> which tracks, with which labels
    audio          -> decode (the one front door)
    features       -> mel, dB, per-frame scaling (pure numpy)
    recipe         -> one file through decode + features
    engines/       -> many files over local processes or Ray
    store          -> the on-disk dataset (arrays + table + journal)
    extract        -> the job that ties them together
    export, plots, torchdata, model, train -> what consumes a store
    cli            -> the `melset` command
"""

from melset.config import Recipe

__version__ = "0.1.0"

__all__ = ["Recipe", "__version__"]
