"""The command-line application every command registers on, its shared options, and the wrapper
that turns user errors into a located message and exit code 2."""
from __future__ import annotations

import os
import sys
from functools import wraps
from typing import Callable, List, Optional

import typer
from rich.console import Console

from eidsl.errors import EidslError

def _plain_help() -> None:
    """Help panels as people write them: flags take no value, so they show no `<bool>`; a required
    argument reads FILE in the usage line, not typer 0.29's `{file}`."""
    from typer import core

    def usage_name(self) -> str:
        name = self.display_name_raw.upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    shown = core.TyperOption.display_type_rich

    def display_type(self, ctx):
        return None if self.is_flag or self.count else shown(self, ctx)

    core.TyperArgument._usage_display_name = usage_name
    core.TyperOption.display_type_rich = display_type


_plain_help()

app = typer.Typer(add_completion=True, no_args_is_help=True,
                  help="eidsl: a language and compiler for cortical E-I spiking networks (DeepEISNN).")
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)   # a located error stays one line, as editors parse it

SetOption = typer.Option(None, "--set", "-s", help="override a network parameter: --set depth=8 (repeatable)")
IncludeOption = typer.Option(None, "--include", "-I", help="extra folder that `import` may read from")


def parse_sets(items: Optional[List[str]]) -> dict[str, str]:
    sets = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise EidslError(f"--set takes NAME=VALUE, got {item!r}")
        sets[key.strip()] = value.strip()
    return sets


def _left_to_rank_0(exc: EidslError) -> bool:
    """Under --nproc every rank meets the same spec or settings error; rank 0 alone reports it."""
    if os.environ.get("WORLD_SIZE", "1") in ("", "1"):
        return False
    from eidsl.train.distributed import quiet
    return quiet(exc)


def command(fn: Callable) -> Callable:
    """Turn eidsl errors into a located message and exit code 2; never a traceback for user errors."""
    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EidslError as exc:
            if not _left_to_rank_0(exc):
                err.print(exc.render(), markup=False, highlight=False, soft_wrap=True)  # one line in logs too
            raise typer.Exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug in eidsl, not in the user's input
            if os.environ.get("EIDSL_DEBUG"):
                raise
            err.print(f"internal error: {type(exc).__name__}: {exc}\n"
                      "this is a bug in eidsl; rerun with EIDSL_DEBUG=1 for the traceback", markup=False)
            raise typer.Exit(3)
    return run
