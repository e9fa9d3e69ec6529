"""`python -m scratchnet`: the `scratchnet` command."""

from scratchnet.cli import main

main()
