"""The on-disk dataset: memory-mappable arrays plus a table that says what happened to each track.

    D/manifest.json   how the store was made (recipe, inputs, versions, counts, times)
    D/tracks.parquet  one row per track: track_id, path, genre_top, subset, split, status, error, duration_s
    D/mels.npy        (rows, n_mels, n_frames) float16|float32; row i <-> row i of tracks.parquet
    D/labels.npy      (rows, n_classes) uint8 one-hot; all zeros for a track without genre
    D/classes.json    the class names, sorted (scikit-learn LabelBinarizer's order)
    D/journal.jsonl   append-only record of finished rows (what makes a killed run resumable)

Crash safety: a row's matrix is written in place, the file is synced, and only then is the
row's record appended to the journal (also synced). On resume, rows without a complete
journal record are simply done again, so no half-written row is ever counted as done.
A new store's manifest is written first (state "creating"), so a folder holding store files
without a manifest is never melset's half-made store: it is refused, never deleted.

Nothing read back is trusted. manifest.json carries a sha256 of its own fields and of
labels.npy and tracks.parquet; .npy headers must match the manifest and the file sizes their
headers; every journal line is checked (a torn last line is a kill, any other bad line is
damage); each journal record holds the crc32 of its row's bytes. A resume reads only the
manifest, the journal and mels.npy (rows whose bytes miss their checksum are done again) and
writes the files derived from the catalog anew. `repair` marks damaged rows for re-extraction.
The store knows nothing of audio: callers hand it matrices and an identity to check.

Rooms: format.py (states, the journal line, sealing, tracks.parquet, atomic writes), sink.py
(RowSink, what engine workers import), space.py (disk space), checks.py (read-back validation),
writer.py (StoreWriter, StoreLock), reader.py (Store), repair.py (repair).
"""

from melset.errors import StoreError
from melset.store.checks import read_manifest
from melset.store.format import Record, now_iso, read_journal
from melset.store.reader import Store
from melset.store.repair import Repair, repair
from melset.store.sink import RowSink, SinkUnreachable
from melset.store.space import DISK_FULL, disk_full_message
from melset.store.writer import StoreLock, StoreWriter

__all__ = [
    "DISK_FULL",
    "Record",
    "Repair",
    "RowSink",
    "SinkUnreachable",
    "Store",
    "StoreError",
    "StoreLock",
    "StoreWriter",
    "disk_full_message",
    "now_iso",
    "read_journal",
    "read_manifest",
    "repair",
]
