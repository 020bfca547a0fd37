"""Every bound eidsl puts on the work and memory one input may cost, in one place.

A spec is untrusted text: without these a few lines can ask for hours of CPU or gigabytes of
memory before anything reports an error. Each limit is far above what a real network needs
(the shipped specs use at most 7 % of the token limit and 1.1 % of any other one:
specs/resnet.ei takes 2,055 steps and 54 nodes) and is named, with its value, in the located
error that refuses an input over it. docs/reliability.md lists them with their tests.
"""
from __future__ import annotations

# ---------------------------------------------------------------- text

# Bytes of one spec file, the root as well as every import: the parser holds a tree node per
# token, and 3.5 MB of text took 46 s and 1.4 GB. The largest shipped spec is ~3 KB.
MAX_SPEC_BYTES = 256 * 2**10
# Tokens of one spec file (comments aside): the parser's time is per token, ~0.1 ms each on a
# busy machine, so this keeps any file's parse to seconds. The standard library has ~700.
MAX_TOKENS = 10_000
# Characters of one --set value.
MAX_SET_CHARS = 10_000
# Characters of a string, as written (a literal) or computed (`a + b`).
MAX_STRING = 10_000
# Levels of the parse tree, then of the syntax tree (where `a + b + c` nests): the evaluator
# walks them recursively, so they bound Python's stack.
MAX_PARSE_DEPTH = 150
MAX_NESTING = 100
# Whole numbers beyond this are refused, as literals and as arithmetic results.
MAX_INT = 2 ** 64

# ---------------------------------------------------------------- elaboration

# Elaboration steps: statements executed plus expression nodes evaluated, over the whole
# expansion (loops and motif calls included). About 3 µs each on a busy 2-core machine.
MAX_STEPS = 250_000
# Items of one list (`range`, `+`, `*`, a literal).
MAX_LIST = 100_000
# List items and string characters made over the whole expansion: values kept alive in a
# loop (`l = l + [range(n)]`) grew ~39 MB per iteration without it.
MAX_MADE = 2_000_000
# Nodes of the expanded graph (populations, pools, sums, ...).
MAX_NODES = 2_500
# Motif calls nested inside each other.
MAX_DEPTH = 64
# Dimensions of a network's input (`image([c, h, w])` has 3).
MAX_INPUT_RANK = 8
# Independent errors reported before elaboration stops.
MAX_ERRORS = 20

# ---------------------------------------------------------------- training settings

MAX_EPOCHS = 1_000_000
MAX_BATCH = 2 ** 24

# ---------------------------------------------------------------- files

# A reference .pth (a zip archive) is refused before reading when its members would inflate
# past this, or when one is compressed more than MAX_INFLATE times (torch.save stores members
# uncompressed; a deflated 1 MB member that inflates to 1.6 GB is a bomb, not a checkpoint).
MAX_IMPORT_BYTES = 2 * 2**30
MAX_INFLATE = 20
# A TOML settings file, a run's config.json and graph.json, a build's spec.json and graph.json.
MAX_SETTINGS_BYTES = 16 * 2**20
