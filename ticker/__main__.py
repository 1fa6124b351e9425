"""`python -m ticker` runs the command line."""

from ticker.cli import main

main()
