"""`melset export`: a store written in another format (the notebook's pickles, Hugging Face, WebDataset)."""

from __future__ import annotations

import os
import signal
import sys

import click

from melset.cli.base import EXIT_INTERRUPTED, EXIT_TERMINATED, _fail, _open, _Terminated, _terminated, err, say
from melset.card import CARD
from melset.errors import MelsetError


@click.command()
@click.argument("store_dir", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["seed-pickles", "hf", "webdataset"]),
    required=True,
    help="seed-pickles: the reference notebook's own pickles; hf: a Hugging Face DatasetDict (melset[hf]); "
    "webdataset: tar shards for the webdataset library.",
)
@click.option(
    "--to",
    "to",
    type=click.Path(),
    required=True,
    help="Output folder (new, empty, or an earlier export), or an fsspec URL (s3://bucket/prefix, gs://..., az://...): "
    "built locally, uploaded, its record melset-export.json written last.",
)
@click.option(
    "--shard-size",
    type=int,
    default=None,
    help="webdataset: samples per tar shard (default: at least 8 shards per split when it has 8 rows, "
    "at most 1000 samples each, so that a DataLoader's workers all get shards).",
)
@click.option(
    "--storage-option",
    "storage_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="An fsspec storage option for a URL --to (repeatable): endpoint_url=..., profile=...; credentials also "
    "come from the backend's environment (AWS_*).",
)
def export(store_dir, fmt, to, shard_size, storage_option):
    """Write a store in another format: the notebook's pickles, a Hugging Face dataset, WebDataset shards."""
    from melset import export as exports
    from melset.location.remote import is_url, parse_storage_options

    options = {}
    try:
        options = parse_storage_options(storage_option)
    except MelsetError as exc:
        _fail(str(exc))
    if options and not is_url(to):
        _fail(f"--storage-option applies to a URL --to (s3://..., gs://...), not the folder {to}")
    store = _open(store_dir)
    if shard_size is not None and fmt != exports.WEBDATASET:
        _fail(f"--shard-size applies to --format webdataset only, not {fmt}")
    if store.manifest.get("state") != "complete":
        say(("warning", "yellow"), ": the store is incomplete; exporting the rows finished so far", console=err)
    previous = signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: the work folder is removed
    try:
        if fmt == exports.SEED_PICKLES:
            n = exports.seed_pickles(store, to, options)
            say(f"wrote {n['pickles']} spectrogram pickles, {n['labels']} labels and {n['classes']} classes to {to}")
            return
        if fmt == exports.HF:
            counts = exports.hf(store, to, options)
            opts = ", storage_options=..." if is_url(to) else ""
            how = f"datasets.load_from_disk({to!r}{opts})"
        else:
            counts = exports.webdataset(store, to, shard_size, options)
            how = f"webdataset shards {to.rstrip('/')}/<split>-NNNNNN.tar"
    except MelsetError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write the {fmt} export to {to}: {exc.strerror or exc}")
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        how = "terminated (SIGTERM)" if terminated else "interrupted"
        say((how, "yellow"), f": no part of the new export was kept; {to} is as it was", console=err)
        sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)  # the export is over: nothing left to clean
    parts = ", ".join(f"{name} {n}" for name, n in counts.items())
    say(f"wrote {sum(counts.values())} ok rows ({parts}) as {how}")
    if fmt != exports.SEED_PICKLES:
        card = f"{to.rstrip('/')}/{CARD}" if is_url(to) else os.path.join(to, CARD)
        say(f"dataset card (what was made, how, the licences to check): {card}")
