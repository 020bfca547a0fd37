"""`python -m eidsl.cli`: the command line."""
from eidsl.cli import main

main()
