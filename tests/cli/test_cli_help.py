"""Help panels people can read (no typer type tokens for flags, FILE not {file}) and shell completion."""
import typer
from typer.testing import CliRunner

from eidsl.cli import app

runner = CliRunner()


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path)
        else:
            yield path


def test_every_help_panel_is_free_of_type_tokens_for_flags_and_braces():
    root = typer.main.get_command(app)
    paths = list(_commands(root))
    assert ("import", "nir") in paths and ("train",) in paths and ("graph",) in paths
    for path in paths:
        res = runner.invoke(app, [*path, "--help"], prog_name="eidsl", env={"COLUMNS": "120"})
        assert res.exit_code == 0, (path, res.output)
        assert "<bool>" not in res.output, path
        usage = next(line for line in res.output.splitlines() if "Usage:" in line)
        assert "{" not in usage and "}" not in usage, (path, usage)
    res = runner.invoke(app, ["graph", "--help"], prog_name="eidsl", env={"COLUMNS": "120"})
    assert "Usage: eidsl graph [OPTIONS] FILE" in res.output


def test_shell_completion_script_and_completions():
    res = runner.invoke(app, ["--show-completion", "bash"], prog_name="eidsl")
    assert res.exit_code == 0 and "complete -o default -F _eidsl_completion eidsl" in res.output
    res = runner.invoke(app, [], prog_name="eidsl",
                        env={"_EIDSL_COMPLETE": "complete_bash", "COMP_WORDS": "eidsl imp", "COMP_CWORD": "1"})
    assert res.output.split() == ["import-deepeisnn", "import"]
    res = runner.invoke(app, [], prog_name="eidsl",
                        env={"_EIDSL_COMPLETE": "complete_bash", "COMP_WORDS": "eidsl import n", "COMP_CWORD": "2"})
    assert res.output.split() == ["nir"]
