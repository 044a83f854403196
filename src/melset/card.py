"""What makes an export portable: track paths relative to the collection root, and the dataset card.

The hf and webdataset exports store each track's path relative to the root of the audio
collection the store was made from (the store manifest's ``source.audio``); the root itself
is written once, in the export's marker (``source_root``) and in its dataset card. The card
is ``README.md`` in Hugging Face's dataset-card convention (YAML front matter, then text):
what was made (rows per split and status, the classes), how (the recipe, the versions in the
store's manifest) and the licence question the audio raises.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from melset.store import Store
from melset.system import versions
from melset.vocab import EXPORT_SPLITS, OK, PATH, SPLIT, STATUS, STATUSES, UNASSIGNED, UNSPLIT

CARD = "README.md"  # Hugging Face's dataset card, beside the data
LICENSES = {
    "fma": (
        "Every track of the Free Music Archive has its own licence, chosen by its artist (mostly Creative "
        "Commons variants, some of them non-commercial or without derivatives), listed in FMA's `tracks.csv` "
        "column `track.license` (the `license` column under `track`). These spectrograms are derived from "
        "that audio: check each track's licence before you redistribute this export or a part of it."
    ),
    "other": (
        "melset does not know the licences of this collection's audio. GTZAN, a common such collection, has "
        "none: its clips were taken from CDs and radio without the rights holders' permission. These "
        "spectrograms are derived from the audio: check its licences before you redistribute this export."
    ),
}


def source_root(store: Store) -> str | None:
    """The root of the audio collection the store was made from (None when its manifest does not say)."""
    root = (store.manifest.get("source") or {}).get("audio")
    return os.path.normpath(root) if isinstance(root, str) and root else None


def relative_path(path: str, root: str | None) -> str:
    """`path` relative to `root`, '/'-separated; unchanged when there is no root or it lies outside it."""
    if not root or not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, root)
    return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel.replace(os.sep, "/")


WDS_LOADER = """import glob, webdataset as wds
from torch.utils.data import DataLoader
urls = sorted(glob.glob("{dir}/train-*.tar"))
# empty_check=False: a worker that gets no shard (fewer shards than workers) ends without error
ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
loader = DataLoader(ds, batch_size=None, num_workers=2)  # each shard is read by one worker"""

# shards at a URL: webdataset opens them through fsspec (credentials from the environment)
WDS_LOADER_URL = """import fsspec, webdataset as wds
from torch.utils.data import DataLoader
def fsspec_open(url, mode="rb", bufsize=8192, **kw):
    return fsspec.open(url, mode).open()
for scheme in ("s3", "gs", "az"):
    wds.gopen_schemes[scheme] = fsspec_open
fs, root = fsspec.core.url_to_fs("{dir}")
urls = sorted(fs.unstrip_protocol(p) for p in fs.glob(root + "/train-*.tar"))
ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
loader = DataLoader(ds, batch_size=None, num_workers=2)  # each shard is read by one worker"""


def wds_loader(to: str | os.PathLike) -> str:
    """The card's example of reading the shards, for a folder or a URL."""
    url = isinstance(to, str) and "://" in to
    return (WDS_LOADER_URL if url else WDS_LOADER).format(dir=here(to))


def here(to: str | os.PathLike) -> str:
    """The export folder's own name, for the card's example (no path of this machine); a
    URL (s3://bucket/prefix) as it is, the place every reader of it uses."""
    if isinstance(to, str) and "://" in to:
        return to.rstrip("/")
    return os.path.basename(os.path.realpath(to))


def _split_names(store: Store) -> np.ndarray:
    """Each row's export split: FMA's training/validation/test as train/validation/test, rows
    without one as unassigned, or every row as train when no ok row has a split."""
    names = np.array(
        [EXPORT_SPLITS.get(s, UNASSIGNED) if isinstance(s, str) else UNASSIGNED for s in store.tracks[SPLIT]]
    )
    ok = store.ok_rows()
    if len(ok) and (names[ok] == UNASSIGNED).all():
        names[names == UNASSIGNED] = UNSPLIT
    return names


def export_splits(store: Store) -> dict[str, np.ndarray]:
    """The ok rows of each export split (see `_split_names`), in the order train, validation, test, unassigned."""
    rows = store.ok_rows()
    names = _split_names(store)[rows]
    order = [*EXPORT_SPLITS.values(), UNASSIGNED]
    return {name: rows[names == name] for name in order if (names == name).any()}


def _counts(store: Store) -> pd.DataFrame:
    """Rows per export split (rows) and status (columns)."""
    table = pd.crosstab(
        pd.Series(_split_names(store), name=SPLIT), pd.Series(store.tracks[STATUS].tolist(), name=STATUS)
    )
    order = [s for s in (*EXPORT_SPLITS.values(), UNASSIGNED) if s in table.index]
    return table.reindex(index=order, columns=list(STATUSES), fill_value=0)


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"


def dataset_card(store: Store, fmt: str, written: dict[str, int], how_to_load: str) -> str:
    """The text of an export's README.md: Hugging Face's dataset card (YAML front matter, then Markdown).

    Parameters
    ----------
    store : Store
        The store exported.
    fmt : str
        The export format ("hf" or "webdataset").
    written : dict
        Rows written per export split.
    how_to_load : str
        Python lines that read the export.
    """
    name = os.path.basename(os.path.normpath(store.root))
    title = f"{name}: log-mel spectrograms made by melset"
    source = store.manifest.get("source") or {}
    layout = source.get("layout", "unknown")
    root = source_root(store)
    total = sum(written.values())
    front = [
        "---",
        "license: other",
        "task_categories:",
        "- audio-classification",
        f"pretty_name: {json.dumps(title, ensure_ascii=False)}",
        "tags:",
        "- music",
        "- genre",
        "- mel-spectrogram",
        "- melset",
        "size_categories:",
        f"- {_size_category(total)}",
        "---",
    ]
    counts = _counts(store)
    table = ["| split | " + " | ".join(counts.columns) + " | exported |", "|---" * (len(counts.columns) + 2) + "|"]
    for split, row in counts.iterrows():
        table.append(f"| {split} | " + " | ".join(str(int(n)) for n in row) + f" | {written.get(split, 0)} |")
    classes = [f"{i}. {_cell(c)}" for i, c in enumerate(store.classes)]
    made_with = {
        "store_id": store.manifest.get("store_id"),
        "created": store.manifest.get("created"),
        "labels": store.label_kind,
        "layout": layout,
        "shape": store.manifest.get("shape"),
        "dtype": store.manifest.get("dtype"),
    }
    exported_by = versions("melset", *(["datasets"] if fmt == "hf" else []))
    text = [
        f"# {title}",
        "",
        f"A `{fmt}` export of the melset store `{_cell(name)}`: {total} spectrograms, one per track that "
        f"gave the recipe's matrix (status `{OK}`), each with its track id, genre label and path.",
        "",
        "```python",
        how_to_load,
        "```",
        "",
        "## What was made",
        "",
        f"Tracks of the store per split and status; only `{OK}` rows are exported.",
        "",
        *table,
        "",
        f"Classes ({store.label_kind}, label index first):",
        "",
        *classes,
        "",
        "## Paths",
        "",
        f"Each `{PATH}` is relative to the root of the audio collection, recorded here once "
        f"(and as `source_root` in `melset-export.json`): `{_cell(root)}`. A path outside that root stays absolute.",
        "",
        "## How it was made",
        "",
        "The store:",
        "",
        "```json",
        json.dumps(made_with, indent=2, ensure_ascii=False),
        "```",
        "",
        "The recipe (every parameter that decides the matrices' bytes):",
        "",
        "```json",
        json.dumps(store.recipe, indent=2, ensure_ascii=False),
        "```",
        "",
        "Versions that made the store (its manifest), then those that wrote this export:",
        "",
        "```json",
        json.dumps({"store": store.manifest.get("versions", {}), "export": exported_by}, indent=2, ensure_ascii=False),
        "```",
        "",
        "## Licence",
        "",
        LICENSES["fma" if layout == "fma" else "other"],
        "",
    ]
    return "\n".join(front + [""] + text)


def write_card(folder: str, store: Store, fmt: str, written: dict[str, int], how_to_load: str) -> None:
    """Write `folder`/README.md, the export's dataset card (see `dataset_card`)."""
    with open(os.path.join(folder, CARD), "w", encoding="utf-8") as f:
        f.write(dataset_card(store, fmt, written, how_to_load))
