"""`eidsl memory`, and the --memory-limit option every command that builds a network shares.

Other commands use it as::

    from eidsl.cli.reliability import MemoryLimitOption, parse_memory_limit
    def train(..., memory_limit: Optional[str] = MemoryLimitOption):
        model = build(spec, batch=batch_size, memory_limit=parse_memory_limit(memory_limit))
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import List, Optional

import typer

from eidsl.cli.app import IncludeOption, SetOption, app, command, out, parse_sets
from eidsl.errors import EidslError

MemoryLimitOption = typer.Option(
    None, "--memory-limit", metavar="SIZE",
    help="refuse a network whose training step is estimated to need more than SIZE (512M, 8G, 1.5GiB, "
         "or 'none'); default: the memory available now")

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_memory_limit(text: str | None) -> float | None:
    """'8G' -> bytes; None -> None (the memory available now); 'none' -> no limit (math.inf)."""
    if text is None:
        return None
    if text.strip().lower() in ("none", "off", "unlimited"):
        return math.inf
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise EidslError(f"--memory-limit takes a size such as 512M, 8G or 1.5GiB, or 'none'; got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@app.command()
@command
def memory(file: Path, batch: Optional[int] = typer.Option(None, "--batch", "-b", min=1,
                                                            help="batch size (default: the train block's)"),
           sets: Optional[List[str]] = SetOption, include: Optional[List[Path]] = IncludeOption,
           memory_limit: Optional[str] = MemoryLimitOption,
           as_json: bool = typer.Option(False, "--json", help="one JSON object on stdout")):
    """Estimated memory of one training step, from the spec alone; exit 2 when over the limit."""
    from eidsl.api import load_graph
    from eidsl.lang.checks import available_memory, check_size, estimate_bytes, format_bytes
    limit = parse_memory_limit(memory_limit)
    graph = load_graph(file, parse_sets(sets), include or (), memory_limit=math.inf)
    batch = batch or int(graph.train.get("batch_size", 1))
    est = estimate_bytes(graph, batch)
    shown_limit = available_memory() if limit is None else limit
    if as_json:
        print(json.dumps({**est, "limit_bytes": None if math.isinf(shown_limit) else shown_limit}))
    else:
        out.print(f"{graph.name} at batch {batch:,}, T = {est['T']}:\n"
                  f"  parameters   {est['parameters']:,} -> {format_bytes(est['parameter_bytes'])} "
                  "with gradients and momentum\n"
                  f"  activations  {format_bytes(est['activation_bytes'])}\n"
                  f"  total        {format_bytes(est['total_bytes'])}   "
                  f"(limit: {'none' if math.isinf(shown_limit) else format_bytes(shown_limit)})",
                  highlight=False, markup=False)
    check_size(graph, batch, limit)
