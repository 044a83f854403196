"""melset's words, defined once: track statuses, split names, table columns, store and run file names.

Every other module imports these names instead of spelling the strings itself, so a
status, a column or a file is named in exactly one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# -- what happened to a track -------------------------------------------------------------------
OK = "ok"
TOO_SHORT = "too_short"
FAILED = "failed"
MISSING = "missing"
STATUSES = (OK, TOO_SHORT, FAILED, MISSING)  # a row's final status
PENDING = "pending"  # not finished yet (counted, never stored in the journal)

# -- splits: FMA's names, used for every layout ------------------------------------------------
TRAINING = "training"
VALIDATION = "validation"
TEST = "test"
SPLITS = (TRAINING, VALIDATION, TEST)
SPLIT_ALIASES = {**{s: s for s in SPLITS}, "train": TRAINING, "valid": VALIDATION, "val": VALIDATION}
# Hugging Face's conventional split names for FMA's (exports use them)
EXPORT_SPLITS = {TRAINING: "train", VALIDATION: VALIDATION, TEST: TEST}
UNSPLIT = "train"  # the export split of a store without splits
UNASSIGNED = "unassigned"  # the export split of rows without one in a store where others have one

# -- tracks.parquet and the catalog table -------------------------------------------------------
TRACK_ID, PATH, GENRE_TOP, SUBSET, SPLIT = "track_id", "path", "genre_top", "subset", "split"
STATUS, ERROR, DURATION_S = "status", "error", "duration_s"
GENRES, GENRES_ALL = "genres", "genres_all"  # FMA's genre lists (multi-label stores)
LABEL_KINDS = (GENRE_TOP, GENRES, GENRES_ALL)  # what labels.npy encodes (--labels)
CATALOG_COLUMNS = (TRACK_ID, PATH, GENRE_TOP, SUBSET, SPLIT)  # what every layout gives
OUTCOME_COLUMNS = (STATUS, ERROR, DURATION_S)  # what extraction adds
TRACK_COLUMNS = CATALOG_COLUMNS + OUTCOME_COLUMNS  # tracks.parquet, in this order

# -- the store's files ---------------------------------------------------------------------------
MANIFEST = "manifest.json"
TRACKS = "tracks.parquet"
MELS = "mels.npy"
LABELS = "labels.npy"
CLASSES = "classes.json"
JOURNAL = "journal.jsonl"
LOCK = ".lock"
STORE_ID = ".store_id"
STORE_FILES = (MANIFEST, TRACKS, MELS, LABELS, CLASSES, JOURNAL, LOCK, STORE_ID)

# -- a training run's files (melset train --run; melset.runs reads and prepares them) -------------
RUN_WEIGHTS = "model.pt"
RUN_CONFIG = "config.json"
RUN_METRICS = "metrics.json"
RUN_CURVES = "curves.png"
RUN_CHECKPOINT = "checkpoint.pt"  # the latest epoch of a run still training (removed when it finishes)
RUN_FILES = (RUN_WEIGHTS, RUN_CONFIG, RUN_METRICS, RUN_CURVES, RUN_CHECKPOINT)
RUN_PARTIAL = ".partial"  # a run file being written (FILE.partial, renamed to FILE when whole)
CONFUSION_PNG = "confusion_matrix_{split}.png"  # melset evaluate's picture, one per split ("all": every row)


def tracks_schema(id_type: pa.DataType) -> pa.Schema:
    """The Arrow schema of tracks.parquet; track_id is int64 (FMA) or string (other layouts)."""
    import pyarrow as pa

    string, real = pa.string(), pa.float64()
    types = {TRACK_ID: id_type, DURATION_S: real}
    return pa.schema([(name, types.get(name, string)) for name in TRACK_COLUMNS])
