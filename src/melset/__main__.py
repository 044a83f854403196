"""`python -m melset` runs the command line."""

from melset.cli import run

run()
