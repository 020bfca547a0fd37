import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SPECS
from eidsl.train import sweep as sweep_module
from eidsl.cli import app
from eidsl.errors import EidslError
from eidsl.train.sweep import Sweep, cells, json_value, markdown_table, parse_grid, summarize_run


def test_grid_expands_to_every_combination():
    axes = parse_grid(["depth=2,4,8", "family=ei,bn", "input=[1,8,8],[1,28,28]"])
    assert axes[2] == ("input", ["[1,8,8]", "[1,28,28]"])
    got = cells(axes)
    assert len(got) == 3 * 2 * 2
    assert got[0].name == "depth=2,family=ei,input=[1,8,8]"
    assert got[-1].as_dict() == {"depth": "8", "family": "bn", "input": "[1,28,28]"}


@pytest.mark.parametrize("bad", ["depth", "=2,3", "depth=", "2x=1"])
def test_bad_grid_is_a_clear_error(bad):
    with pytest.raises(EidslError, match="--grid takes NAME=V1,V2"):
        parse_grid([bad])


def test_run_summary_reads_best_and_final(tmp_path):
    lines = [{"epoch": 1, "test_acc": 0.5, "train_loss": 2.0, "firing_rates": {"a": 0.1, "b": 0.3}},
             {"epoch": 2, "test_acc": 0.9, "train_loss": 1.0, "firing_rates": {"a": 0.2, "b": 0.2}},
             {"epoch": 3, "test_acc": 0.8, "train_loss": 0.5, "firing_rates": {"a": 0.1, "b": 0.1}}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in lines))
    r = summarize_run(tmp_path)
    assert (r["best_acc"], r["best_epoch"], r["final_acc"], r["epochs"]) == (0.9, 2, 0.8, 3)
    assert r["firing_rate"] == pytest.approx(0.1)
    r.update(cell={"depth": "2"}, status="ok", seconds=3.0)
    table = markdown_table([r], ["depth"])
    assert "| 2 | ok | 90.0 | 80.0 | 2 | 0.100 |" in table


# ---------------------------------------------------------------- which cells are reused

class FakeTrain:
    """Stands in for the `eidsl train` subprocess: records each command, writes a run folder
    whose accuracy depends on the command, so a reused stale cell would show."""

    def __init__(self):
        self.commands = []

    def __call__(self, cmd, stdout=None, stderr=None, env=None):
        self.commands.append(cmd)
        run = Path(cmd[cmd.index("--out") + 1])
        acc = (hash(tuple(cmd[cmd.index("--out") + 2:])) % 1000) / 1000
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": acc}) + "\n")
        (run / "config.json").write_text(json.dumps({"parameters": 123}))
        return subprocess.CompletedProcess(cmd, 0)


@pytest.fixture
def fake_train(monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(sweep_module.subprocess, "run", fake)
    return fake


def test_a_changed_input_never_reuses_a_cell(tmp_path, fake_train):
    (tmp_path / "parts.ei").write_text("motif block(x, n) {\n    return layer(x, n)\n}\n")
    spec = tmp_path / "net.ei"
    spec.write_text((SPECS / "mlp.ei").read_text().replace('import "std"', 'import "std"\nimport "parts.ei"'))
    axes = parse_grid(["ratio=2,4"])

    def sweep(**kw):
        before = len(fake_train.commands)
        args = dict(spec=spec, axes=axes, out=tmp_path / "out", sets={"depth": "2"}, train_args=["--epochs", "3"])
        Sweep(**{**args, **kw}).run(echo=lambda line: None)
        return len(fake_train.commands) - before

    assert sweep() == 2
    assert sweep() == 0                                         # same inputs: finished cells are kept
    assert sweep(train_args=["--epochs", "1"]) == 2             # training settings
    assert sweep(sets={"depth": "4"}) == 2                      # network overrides
    assert sweep(force=True) == 2                               # --force
    assert sweep(run_args=["--threads", "1"]) == 0              # speed settings only
    spec.write_text(spec.read_text().replace("shift = 2", "shift = 1"))
    assert sweep() == 2                                         # the spec's text
    (tmp_path / "parts.ei").write_text("motif block(x, n) {\n    return layer(x, 2 * n)\n}\n")
    assert sweep() == 2                                         # an imported file's text
    assert sweep() == 0
    # Each cell ran with its own settings, and every run folder is distinct.
    folders = [c[c.index("--out") + 1] for c in fake_train.commands]
    assert len(set(folders)) == len(folders) - 2                # only the --force reruns reuse a folder
    assert all(["--set", "ratio=2"] == c[c.index("ratio=2") - 1:c.index("ratio=2") + 1]
               for c in fake_train.commands if "ratio=2" in c)


def test_each_grid_has_its_own_table_with_numbers(tmp_path, fake_train):
    out = tmp_path / "out"
    first = Sweep(SPECS / "mlp.ei", parse_grid(["ratio=2,4"]), out, {"depth": "2"}, ["--epochs", "1"])
    second = Sweep(SPECS / "mlp.ei", parse_grid(["depth=2,4", "family=ei"]), out, {}, ["--epochs", "1"])
    first.run(echo=lambda line: None)
    second.run(echo=lambda line: None)
    assert first.table_paths() != second.table_paths()
    one = json.loads(first.table_paths()[1].read_text())
    two = json.loads(second.table_paths()[1].read_text())
    assert [c["cell"] for c in one["cells"]] == [{"ratio": 2}, {"ratio": 4}]
    assert [c["cell"] for c in two["cells"]] == [{"depth": 2, "family": "ei"}, {"depth": 4, "family": "ei"}]
    assert one["grid"] == {"ratio": [2, 4]} and one["sets"] == {"depth": "2"}
    assert "| 2 | ok |" in first.table_paths()[0].read_text()
    assert "| 4 | ei | ok |" in second.table_paths()[0].read_text()


def test_grid_values_become_json_values():
    assert [json_value(v) for v in ["2", "0.5", "[1,8,8]", "true", "ei", '"bn"']] == \
        [2, 0.5, [1, 8, 8], True, "ei", '"bn"']


@pytest.mark.slow
def test_sweep_cli_reruns_a_cell_whose_settings_changed(tmp_path):
    """The reported case, end to end: the same sweep with another --epochs trains again."""
    args = ["sweep", str(SPECS / "mlp.ei"), "--grid", "depth=2", "--set", "input=[1,8,8]", "--data", "digits",
            "--threads", "1", "-o", str(tmp_path)]
    first = CliRunner().invoke(app, args + ["--epochs", "1"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, args + ["--epochs", "2"])
    assert second.exit_code == 0, second.output
    assert "depth=2: training" in second.output and "done before" not in second.output
    tables = sorted(tmp_path.glob("results-*.json"))
    assert len(tables) == 2
    epochs = sorted(json.loads(t.read_text())["cells"][0]["epochs"] for t in tables)
    assert epochs == [1, 2]
    again = CliRunner().invoke(app, args + ["--epochs", "2"])
    assert "done before, same inputs" in again.output


def test_a_change_of_eidsls_code_gives_new_cells(tmp_path, fake_train, monkeypatch):
    from eidsl.train import sources
    args = (SPECS / "mlp.ei", parse_grid(["ratio=2"]), tmp_path, {"depth": "2"}, ["--epochs", "1"])
    Sweep(*args).run(echo=lambda line: None)
    assert len(fake_train.commands) == 1
    monkeypatch.setattr(sources, "code_fingerprint", lambda: "another-build")
    Sweep(*args).run(echo=lambda line: None)
    assert len(fake_train.commands) == 2
