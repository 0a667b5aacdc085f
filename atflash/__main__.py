"""python -m atflash: the command line."""

from atflash.cli import main

main()
