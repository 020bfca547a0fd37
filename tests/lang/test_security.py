"""Specs are data: nothing in a spec runs as code, and `import` reads only from the allowed folders."""
import ast
import os
import subprocess
import sys

import pytest

from eidsl.api import load_graph
from eidsl.errors import EidslError, SpecError
from eidsl.lang.parser import _lark

from conftest import ROOT

# Every module a spec passes through on its way to the graph IR and the plan.
SPEC_PATH = ["eidsl/lang/parser.py", "eidsl/lang/elaborate.py", "eidsl/lang/checks.py", "eidsl/ir.py", "eidsl/lang/syntax.py",
             "eidsl/errors.py", "eidsl/tools/describe.py", "compiler/lower.py", "compiler/plan.py"]
CODE_RUNNERS = {"eval", "exec", "compile", "__import__", "breakpoint"}
CODE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "importlib",
                "runpy", "code", "codeop", "subprocess", "ctypes"}


def forbidden_uses(source: str) -> list[str]:
    """Calls that turn data into running code, and imports of modules that do."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CODE_RUNNERS:
            found.append(f"line {node.lineno}: {node.func.id}()")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr") \
                and len(node.args) > 1 and not isinstance(node.args[1], ast.Constant):
            found.append(f"line {node.lineno}: {node.func.id} with a computed name")
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in CODE_MODULES]
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in CODE_MODULES:
            found.append(f"line {node.lineno}: from {node.module} import")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            if node.value.id in CODE_MODULES or pair in {("torch", "load"), ("os", "system"), ("os", "popen")} \
                    or (node.value.id == "os" and node.attr.startswith(("exec", "spawn"))):
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("module", SPEC_PATH)
def test_spec_path_has_no_way_to_run_code(module):
    assert forbidden_uses((ROOT / module).read_text()) == []


def test_the_code_scan_finds_what_it_looks_for():
    sample = ("import pickle\nfrom importlib import import_module\nimport os\n"
              "eval('1')\nexec('x=1')\ncompile('1', 'f', 'eval')\n__import__('os')\n"
              "os.system('true')\ngetattr(os, name)\nself.eval(expr)\ngetattr(rec, 'delay', 0)\n")
    found = forbidden_uses(sample)
    assert len(found) == 8, found
    assert not any("self" in f or "'delay'" in f for f in found)


def test_the_grammar_is_not_loaded_from_a_pickled_cache():
    # Lark's cache option stores the parser with pickle; a planted cache file would run on load.
    assert not _lark().options.cache


# ---------------------------------------------------------------- code in a spec does nothing

NET = 'import "std"\nnetwork n(T = 2) {{\n{body}\n    return readout(layer(flatten(image([1, 4, 4])), 8))\n}}\n'


@pytest.mark.parametrize("body, line, column, message", [
    ('    x = __import__("os").system("touch {s}")', 3, 32, "unexpected '('"),
    ('    x = eval("__import__(\'os\').system(\'touch {s}\')")', 3, 9, "unknown motif or function 'eval'"),
    ('    exec("import os; os.system(\'touch {s}\')")', 3, 9, "unexpected '('"),
    ('    import os\n    os.system("touch {s}")', 3, 12, "unexpected 'os'"),
    ('    x = open("{s}", "w")', 3, 9, "unknown motif or function 'open'"),
])
def test_python_in_a_spec_is_a_located_error_and_runs_nothing(tmp_path, body, line, column, message):
    sentinel = tmp_path / "SENTINEL"
    spec = tmp_path / "evil.ei"
    spec.write_text(NET.format(body=body.format(s=sentinel)))
    with pytest.raises(SpecError) as info:
        load_graph(spec)
    assert info.value.render().splitlines()[0] == f"{spec}:{line}:{column}: error: {message}"
    assert not sentinel.exists()


def test_python_in_a_set_override_or_a_string_runs_nothing(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    spec = tmp_path / "net.ei"
    spec.write_text(NET.format(body=f'    note = "__import__(\'os\').system(\'touch {sentinel}\')"'))
    assert load_graph(spec).node("layer_1.E").size == 8           # a string stays a string
    with pytest.raises(SpecError) as info:
        load_graph(spec, sets={"T": f'__import__("os").system("touch {sentinel}")'})
    assert info.value.render().startswith("--set T:1:")
    assert not sentinel.exists()


def test_the_cli_reports_python_in_a_spec_without_a_traceback(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    spec = tmp_path / "evil.ei"
    spec.write_text(NET.format(body=f'    x = __import__("os").system("touch {sentinel}")'))
    run = subprocess.run([sys.executable, "-m", "eidsl.cli", "check", str(spec)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith(f"{spec}:3:32: error: unexpected '('\n")
    assert "Traceback" not in run.stderr
    assert not sentinel.exists()


# ---------------------------------------------------------------- imports stay inside the allowed folders

MOTIF = "motif helper(x) {\n    return x\n}\n"
USER = 'import "std"\nimport "{imp}"\nnetwork n(T = 2) {{\n' \
       '    return readout(layer(helper(flatten(image([1, 4, 4]))), 8))\n}}\n'


def write_net(folder, imp, name="net.ei"):
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / name
    spec.write_text(USER.format(imp=imp))
    return spec


def refusal(spec, **kw) -> str:
    with pytest.raises(SpecError) as info:
        load_graph(spec, **kw)
    return info.value.render().splitlines()[0]


@pytest.fixture
def outside(tmp_path):
    """A valid spec file outside every allowed folder."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "helper.ei").write_text(MOTIF)
    return tmp_path / "outside"


def test_imports_inside_the_spec_folder_work(tmp_path):
    (tmp_path / "proj" / "lib").mkdir(parents=True)
    (tmp_path / "proj" / "lib" / "helper.ei").write_text(MOTIF)
    # `..` that stays inside the folder is fine: only where the path ends up counts.
    spec = write_net(tmp_path / "proj", "lib/../lib/helper")
    assert load_graph(spec).node("layer_1.E").size == 8


def test_dotdot_leaving_the_spec_folder_is_refused(tmp_path, outside):
    spec = write_net(tmp_path / "proj", "../outside/helper")
    assert refusal(spec) == (f"{spec}:2:1: error: import '../outside/helper' leaves the allowed folders "
                             f"(it resolves to {outside.resolve() / 'helper.ei'})")


def test_absolute_imports_are_refused(tmp_path, outside):
    spec = write_net(tmp_path / "proj", str(outside / "helper"))
    assert refusal(spec) == f"{spec}:2:1: error: import '{outside / 'helper'}' is an absolute path"


def test_a_symlinked_file_pointing_outside_is_refused(tmp_path, outside):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "helper.ei").symlink_to(outside / "helper.ei")
    spec = write_net(proj, "helper")
    assert refusal(spec).startswith(f"{spec}:2:1: error: import 'helper' leaves the allowed folders")


def test_a_symlinked_folder_pointing_outside_is_refused(tmp_path, outside):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "lib").symlink_to(outside, target_is_directory=True)
    spec = write_net(proj, "lib/helper")
    assert refusal(spec).startswith(f"{spec}:2:1: error: import 'lib/helper' leaves the allowed folders")


def test_a_symlinked_spec_folder_is_its_real_folder(tmp_path, outside):
    real = tmp_path / "real"
    real.mkdir()
    (real / "helper.ei").write_text(MOTIF)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    spec = write_net(real, "helper")
    assert load_graph(tmp_path / "link" / "net.ei").node("layer_1.E").size == 8
    # From the symlinked folder, `..` climbs out of the real folder: still outside.
    escape = write_net(real, "../outside/helper", "escape.ei")
    assert refusal(tmp_path / "link" / escape.name).endswith(
        f"leaves the allowed folders (it resolves to {outside.resolve() / 'helper.ei'})")


def test_include_folders_are_allowed_only_when_given_even_through_a_symlink(tmp_path, outside):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "helper.ei").write_text(MOTIF)
    (tmp_path / "inc").symlink_to(shared, target_is_directory=True)
    spec = write_net(tmp_path / "proj", "helper")
    assert refusal(spec).startswith(f"{spec}:2:1: error: cannot find import 'helper'")
    assert load_graph(spec, include=[tmp_path / "inc"]).node("layer_1.E").size == 8
    # A symlink inside the include folder must not reach past it either.
    (shared / "sneaky.ei").symlink_to(outside / "helper.ei")
    spec = write_net(tmp_path / "proj", "sneaky")
    assert refusal(spec, include=[tmp_path / "inc"]).startswith(
        f"{spec}:2:1: error: import 'sneaky' leaves the allowed folders")


def test_a_fifo_import_is_refused_without_blocking(tmp_path):
    # In a subprocess: before the fix, reading the FIFO blocked forever.
    spec = write_net(tmp_path / "proj", "helper")
    os.mkfifo(tmp_path / "proj" / "helper.ei")
    code = "import sys\nfrom eidsl.api import load_graph\ntry:\n    load_graph(sys.argv[1])\n" \
           "except Exception as e:\n    print(type(e).__name__, e.render().splitlines()[0])\n"
    run = subprocess.run([sys.executable, "-c", code, str(spec)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.stdout.startswith(f"SpecError {spec}:2:1: error: import 'helper' is not a regular file"), \
        run.stdout + run.stderr


def test_a_folder_or_a_symlink_loop_is_a_located_error(tmp_path):
    spec = write_net(tmp_path / "proj", "helper")
    (tmp_path / "proj" / "helper.ei").mkdir()
    assert refusal(spec).startswith(f"{spec}:2:1: error: import 'helper' is not a regular file")
    spec = write_net(tmp_path / "loop", "helper")
    (tmp_path / "loop" / "helper.ei").symlink_to(tmp_path / "loop" / "other.ei")
    (tmp_path / "loop" / "other.ei").symlink_to(tmp_path / "loop" / "helper.ei")
    assert refusal(spec).startswith(f"{spec}:2:1: error: cannot find import 'helper'")


def test_an_overlong_import_name_is_a_located_error(tmp_path):
    spec = write_net(tmp_path, "x" * 300)
    assert refusal(spec).startswith(f"{spec}:2:1: error: cannot read import 'xxx")


def test_every_import_refusal_is_an_eidsl_error(tmp_path, outside):
    # The CLI turns any other exception into "internal error", so the type matters.
    spec = write_net(tmp_path / "proj", "../outside/helper")
    with pytest.raises(EidslError):
        load_graph(spec)
