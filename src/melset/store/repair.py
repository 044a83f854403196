"""repair: mark a store's damaged rows for re-extraction, under the store's lock, through the
format's public writes (journal, table, manifest)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from melset.errors import StoreError
from melset.store.checks import check_npy, damaged_rows, read_manifest, read_npy_header
from melset.store.format import (
    COMPLETE,
    CREATING,
    INCOMPLETE,
    RUNNING,
    JournalScan,
    now_iso,
    CATALOG_SHA,
    catalog_digest,
    journal_owner,
    read_journal,
    rewrite_journal,
    scan_journal,
    status_counts,
    write_manifest,
    write_table,
)
from melset.store.writer import StoreLock
from melset.vocab import CATALOG_COLUMNS, JOURNAL, MELS, TRACKS


@dataclass(frozen=True)
class Repair:
    """What `repair` found and did."""

    root: str
    damaged: list[int]  # rows marked for re-extraction (bytes not matching their record, or named by a bad line)
    dropped_lines: list[int]  # journal lines that failed validation (line numbers)
    resized: bool  # mels.npy had the wrong size and was set to its header's
    journal_missing: bool  # journal.jsonl was missing: every row is done again

    @property
    def changed(self) -> bool:
        return bool(self.damaged or self.dropped_lines or self.resized or self.journal_missing)


def repair(root: str | os.PathLike) -> Repair:
    """Mark a store's damaged rows for re-extraction; the next `melset extract` run with the same
    arguments rebuilds exactly those.

    Damaged: rows whose bytes in mels.npy do not match their journal checksum (including rows
    cut off by a short mels.npy, which is set back to its size) and rows named by a journal
    line that fails validation. The journal is rewritten atomically (write, fsync, rename)
    with the last record of every sound row; damaged rows get none, so they are pending. The
    manifest says "running" before the journal changes, so a crash at any point leaves a store
    that the next extract run completes.

    Raises
    ------
    StoreError
        The manifest or mels.npy's header are damaged (nothing to repair from: rebuild the
        store), or another run holds the store.
    """
    root = os.path.abspath(os.fspath(root))
    manifest = read_manifest(root)
    with StoreLock(root):
        if manifest["state"] == CREATING:
            raise StoreError(
                f"{root} is being created, or its creation was interrupted; run the same `melset extract` command again to finish it"
            )
        n = manifest["rows"]
        mels_path = os.path.join(root, MELS)
        mels = check_npy(mels_path, tuple(manifest["shape"]), manifest["dtype"], exact_size=False)
        journal = os.path.join(root, JOURNAL)
        missing = not os.path.lexists(journal)
        owner = journal_owner(manifest)
        scan = JournalScan({}, [], 0, 0, 0) if missing else scan_journal(journal, rows=n, owner=owner)
        resized = mels.size != mels.expected_size
        if resized:
            os.truncate(mels_path, mels.expected_size)  # lost rows read as zeros: their checksums tell
            mels = read_npy_header(mels_path)
        named = {row for _, row, _ in scan.bad if row is not None}
        # a row named by a bad line loses its record: that line may have been its latest
        damaged = sorted(set(damaged_rows(mels, scan.records)) | named)
        result = Repair(root, damaged, [line for line, _, _ in scan.bad], resized, missing)
        if not result.changed:
            if scan.good_bytes < scan.size:
                read_journal(journal, rows=n, truncate=True, owner=owner)  # a torn last line only
            return result
        keep = {row: r for row, r in scan.records.items() if row not in set(damaged)}
        was_complete = manifest["state"] == COMPLETE
        manifest["state"] = RUNNING
        manifest = write_manifest(root, manifest)
        rewrite_journal(journal, (keep[row] for row in sorted(keep)), owner)
        try:
            import pandas as pd

            base = pd.read_parquet(os.path.join(root, TRACKS), columns=list(CATALOG_COLUMNS), use_threads=False)
        except Exception:  # pyarrow raises many kinds; the next extract writes it again from the catalog
            base = None
        # an edited track list is not carried into a new checksum: the next extract writes it from the catalog
        if base is not None and len(base) == n and manifest.get(CATALOG_SHA, catalog_digest(base)) == catalog_digest(base):
            write_table(root, base, keep, manifest)
            manifest["state"] = COMPLETE if was_complete and len(keep) == n else INCOMPLETE
        manifest["counts"] = status_counts(keep, n)
        manifest["repairs"] = [*manifest.get("repairs", []), {"at": now_iso(), "rows": damaged}]
        write_manifest(root, manifest)
        return result
