"""The `eidsl` command line: one module per command group, each registering on `app`."""
from eidsl.cli import (analyze, bench, check, compile, graph, imports, reliability, sweep, tools,  # noqa: F401
                       train)  # (each registers its commands on `app`)
from eidsl.cli.app import app, command, parse_sets

__all__ = ["app", "command", "main", "parse_sets"]


def main() -> None:
    app()
