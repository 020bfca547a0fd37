"""The text a network was built from: its spec file and every file it imports, read once.

A run, a sweep cell or an imported checkpoint records this text rather than a path: a path
names whatever the file holds later (or nothing, from another working directory), the text
is what was compiled. `fingerprint` hashes it with everything else that decides a result.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from eidsl.errors import SpecError


def spec_sources(spec: str | Path, include=()) -> dict[str, Any]:
    """{"root": name, "files": {name: text}}: the spec and, transitively, its imports.

    Names are paths relative to the spec's folder where they lie below it, else
    `std/...` for the standard library or the file's absolute path."""
    from eidsl.lang.elaborate import STDLIB, _real, _resolve_import
    from eidsl.lang.parser import parse_file
    root = _real(Path(spec))
    roots = [root.parent, STDLIB.resolve(), *[_real(Path(p)) for p in include]]
    files: dict[str, str] = {}
    seen: set[Path] = set()
    todo = [root]
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        files[_name(path, root.parent, STDLIB.resolve())] = path.read_text()
        try:
            module = parse_file(path)
        except SpecError:
            continue    # the text is recorded; the compiler reports the error itself
        for imp in module.imports:
            try:
                todo.append(_resolve_import(imp, path, roots))
            except SpecError:
                continue
    return {"root": _name(root, root.parent, STDLIB.resolve()), "files": files}


def _name(path: Path, base: Path, stdlib: Path) -> str:
    if path.is_relative_to(base):
        return str(path.relative_to(base))
    if path.is_relative_to(stdlib):
        return "std/" + str(path.relative_to(stdlib))
    return str(path)


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of eidsl's own code (the eidsl and compiler packages): the version string alone does
    not change when a checkout is edited, and a changed compiler can change a result."""
    import eidsl_compiler
    h = hashlib.sha256()
    for package in (Path(__file__).parent, Path(eidsl_compiler.__file__).parent):
        for path in sorted(package.rglob("*")):
            if path.suffix in (".py", ".ei", ".lark") and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(package.parent)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (sorted keys): equal inputs, equal hash."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
