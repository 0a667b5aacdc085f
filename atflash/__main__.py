"""python -m atflash: the command line."""

from .cli import main

main()
