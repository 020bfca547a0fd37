"""`python -m eidsl` (and `torchrun -m eidsl train ...`) runs the command line."""
from eidsl.cli import main

main()
