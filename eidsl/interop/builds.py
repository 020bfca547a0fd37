"""Build folders written by `eidsl compile`, and how later commands find them.

    build/<name>/ir.json       the resolved graph IR
    build/<name>/model.py      the generated, readable PyTorch module
    build/<name>/summary.json  layers, parameters, FLOPs per step, E and I neurons
    build/<name>/spec.json     the spec path and --set values, to rebuild the model
    build/LATEST               the path of the most recent build

Every file is written to a temporary name and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eidsl import ir
from eidsl.errors import HintedError
from eidsl.files import atomic_write
from eidsl.files import read_text

FORMAT = "eidsl-build/1"
COMPILE_HINT = "run `eidsl compile SPEC` first"


class BuildError(HintedError):
    pass


@dataclass(frozen=True)
class BuildInfo:
    graph: ir.Graph
    spec: Path
    sets: dict[str, str]
    name: str
    path: Path | None = None          # the build folder
    include: tuple[str, ...] = ()
    network: str | None = None


def record_latest(build_dir: str | Path, root: str | Path = "build") -> Path:
    return atomic_write(Path(root) / "LATEST", str(Path(build_dir).resolve()) + "\n")


def latest_build(root: str | Path = "build") -> Path:
    """The folder of the most recent `eidsl compile`."""
    marker = Path(root) / "LATEST"
    if not marker.is_file():
        raise BuildError(f"no build found ({marker} does not exist)", hint=COMPILE_HINT)
    text = marker.read_text(encoding="utf-8").strip()
    path = Path(text)
    if not path.is_absolute():
        path = Path(root) / path
    if not (path / "spec.json").is_file():
        raise BuildError(f"{marker} points at {path}, which is not a build folder any more", hint=COMPILE_HINT)
    return path


def load_build(path: str | Path) -> BuildInfo:
    """The graph and the spec (with its --set values) of a build folder."""
    path = Path(path)
    spec_file, ir_file = path / "spec.json", path / "ir.json"
    for f in (spec_file, ir_file):
        if not f.is_file():
            raise BuildError(f"{path} is not a build folder: {f.name} is missing", hint=COMPILE_HINT)
    try:
        meta = json.loads(read_text(spec_file))
        graph = ir.Graph.loads(read_text(ir_file))
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"{path}: damaged build ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                         hint=COMPILE_HINT) from None
    if meta.get("format") != FORMAT:
        raise BuildError(f"{spec_file}: not an eidsl build record (format {meta.get('format')!r})", hint=COMPILE_HINT)
    return BuildInfo(graph=graph, spec=Path(meta["spec"]), sets={str(k): str(v) for k, v in meta["sets"].items()},
                     name=meta["name"], path=path, include=tuple(meta.get("include", ())),
                     network=meta.get("network"))


def spec_record(spec: str | Path, sets: dict[str, str], name: str, include=(), network: str | None = None) -> str:
    return json.dumps({"format": FORMAT, "spec": str(Path(spec).resolve()), "sets": dict(sets), "name": name,
                       "include": [str(Path(p).resolve()) for p in include], "network": network}, indent=1) + "\n"
