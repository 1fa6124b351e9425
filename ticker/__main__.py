"""`python -m ticker` runs the command line."""

from ticker.cli import main

if __name__ == "__main__":
    main()
