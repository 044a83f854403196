"""`python -m melset` runs the command line."""

from melset.cli import main

main(prog_name="melset")
