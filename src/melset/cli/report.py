"""`melset report`: one HTML page about a store or a training run."""

from __future__ import annotations

import click

from melset.cli.base import _fail, _open, err, say
from melset.cli.options import _DEVICE
from melset.errors import MelsetError
from melset.vocab import SPLITS, TEST


@click.command()
@click.argument("path", type=click.Path())
@click.option(
    "--html", "html_file", type=click.Path(), required=True, help="The page to write (one self-contained file)."
)
@click.option(
    "--examples",
    type=click.IntRange(min=1, max=100),
    default=3,
    show_default=True,
    help="Store: example spectrograms per genre.",
)
@click.option(
    "--store", "store_dir", type=click.Path(), default=None, help="Run: the store to score on (default: the run's own)."
)
@click.option(
    "--split", type=click.Choice([*SPLITS, "all"]), default=TEST, show_default=True, help="Run: the split to score."
)
@click.option("--device", type=_DEVICE, default="cpu", show_default=True)
def report(path, html_file, examples, store_dir, split, device):
    """An HTML page about a store (counts, failures, recipe, durations, spectrograms) or a training run (curves, scores)."""
    from melset import report as reports

    try:
        reports.html_target(html_file)  # before any work
        kind = reports.kind_of(path)
        if kind == "store":
            if store_dir is not None:
                _fail("--store applies to a run's report, not a store's")
            text = reports.store_page(_open(path), examples)
        else:
            text, why_not = reports.run_page(path, store_dir, None if split == "all" else split, device)
            if why_not:
                say(("warning", "yellow"), f": the page has no scores: {why_not}", console=err)
        written = reports.write_html(html_file, text)
    except MelsetError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write {html_file}: {exc.strerror or exc}")
    say(f"wrote {written}")
