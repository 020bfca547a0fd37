"""The `eidsl` command line: one module per command group, each registering on `app`."""
from eidsl.cli import analyze, bench, check, compile, graph, reliability, sweep, tools, train  # noqa: F401  (registration)
from eidsl.cli.app import app, command, parse_sets

__all__ = ["app", "command", "main", "parse_sets"]


def main() -> None:
    app()
