"""``python -m cutover``: the command line."""

from cutover.cli import main

main()
