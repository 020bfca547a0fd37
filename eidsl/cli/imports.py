"""`eidsl import nir` (a NIR graph -> a readable spec and its weights). `eidsl import deepeisnn`, the same
command as `eidsl import-deepeisnn`, is registered here by cli_compile, which defines it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from eidsl.cli.app import app, command, out
from eidsl.errors import EidslError

import_app = typer.Typer(no_args_is_help=True, help="Bring a model from another tool into eidsl.")
app.add_typer(import_app, name="import")


def _say(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)


@import_app.command("nir")
@command
def import_nir(model: Path = typer.Argument(..., help="the .nir file (snnTorch, Norse, SpikingJelly, eidsl, ...)"),
               output: Path = typer.Option(..., "--output", "-o", help="folder for NAME.ei and weights.safetensors"),
               dt: Optional[float] = typer.Option(None, "--dt", help="Euler step of one eidsl time step, in the "
                                                  "graph's time unit (default: the file's, or r = tau/dt)"),
               steps: Optional[int] = typer.Option(None, "--T", help="time steps of the written network "
                                                   "(default: the file's, else 4)"),
               name: str = typer.Option("imported", "--name", help="network name in the written spec"),
               plain: bool = typer.Option(False, "--plain", help="ignore an eidsl-ei/1 extension and import the "
                                          "NIR nodes alone")):
    """Import a NIR graph: write a readable .ei spec plus its weights, or refuse naming the node."""
    from safetensors.torch import save_file

    from eidsl.interop import nir_import as NI
    if not name.isidentifier():
        raise EidslError(f"--name must be a name usable in a spec, got {name!r}")
    if steps is not None and steps < 1:
        raise EidslError(f"--T must be at least 1, got {steps}")
    if output.exists() and not output.is_dir():
        raise EidslError(f"{output} is a file; -o takes a folder")
    graph = NI.read(model)
    result = NI.import_graph(graph, dt=dt, T=steps, name=name, plain=plain, source=model.name)
    result.network()        # the weights load into the written spec, or this is a bug worth a traceback
    output.mkdir(parents=True, exist_ok=True)
    spec = output / f"{result.graph.name}.ei"
    weights = output / "weights.safetensors"
    try:
        spec.write_text(result.text)
        save_file(result.state, str(weights), metadata={"format": "eidsl-state/1", "spec": spec.name,
                                                        "source": str(model)})
    except OSError as exc:
        raise EidslError(f"cannot write into {output}: {exc.strerror or exc}") from None
    kind = "exact circuit from the eidsl-ei/1 extension" if result.exact else "NIR nodes mapped onto eidsl"
    _say(f"wrote {spec} and {weights} ({kind}; {len(result.state)} tensors, "
         f"{sum(v.numel() for v in result.state.values()):,} values)")
    for note in result.notes:
        _say(note)
    _say(f"next: eidsl describe {spec}   |   eidsl export nir {spec} --weights {weights} -o OUT.nir")


def _also_under_import() -> None:
    # `eidsl import deepeisnn` next to `eidsl import nir`; `import-deepeisnn` keeps working.
    from eidsl.cli.compile import import_deepeisnn
    import_app.command("deepeisnn", help="Convert a DeepEISNN (reference implementation) checkpoint into an "
                                         "eidsl checkpoint (same as `eidsl import-deepeisnn`).")(import_deepeisnn)


_also_under_import()
