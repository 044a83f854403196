"""melset: turn an audio collection (FMA and friends) into a training-ready log-mel dataset.

    import melset
    catalog = melset.open_catalog("fma_small", tracks="fma_metadata/tracks.csv", subset="small")
    summary = melset.extract.extract(catalog, melset.Recipe(), "fma_small.melset")
    store = melset.Store("fma_small.melset")
    row = store[2]                     # {"mel": matrix, "track_id": ..., "label": ..., ...}
    mel = melset.log_mel(y, sr)        # samples in memory -> the recipe's matrix, as extract stores it

The data's path, one module (or package) per step; see README's Architecture section.
Submodules load on first use, so `import melset` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from melset.errors import MelsetError

__version__ = "0.1.0"

_SUBMODULES = {
    "audio",
    "augment",
    "catalog",
    "cli",
    "dataset",
    "engines",
    "errors",
    "evaluate",
    "export",
    "extract",
    "features",
    "melscale",
    "model",
    "plots",
    "predict",
    "recipe",
    "report",
    "runs",
    "store",
    "system",
    "track",
    "train",
    "train_config",
    "vocab",
}
_NAMES = {
    "open_catalog": "melset.catalog",
    "Catalog": "melset.catalog",
    "Recipe": "melset.recipe",
    "Store": "melset.store",
    "log_mel": "melset.track",
}

if TYPE_CHECKING:
    from melset import catalog, extract, store  # noqa: F401
    from melset.catalog import Catalog, open_catalog
    from melset.recipe import Recipe
    from melset.store import Store
    from melset.track import log_mel

__all__ = ["Catalog", "MelsetError", "Recipe", "Store", "__version__", "log_mel", "open_catalog"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"melset.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'melset' has no attribute {name!r}")
