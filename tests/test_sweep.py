import json

import pytest

from eidsl.errors import EidslError
from eidsl.train.sweep import cells, markdown_table, parse_grid, summarize_run


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
