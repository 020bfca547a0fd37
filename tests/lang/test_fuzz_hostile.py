"""CI's slice of the hostile fuzz run (bench/fuzz_hostile.py runs 10,000 cases): mutated specs
with hostile insertions through `eidsl check` exit 0 or 2, within 10 s, without a traceback."""
import pytest

from bench import fuzz_hostile as H


def test_the_quick_slice_exits_0_or_2_fast_and_without_tracebacks():
    report = H.campaign(H.QUICK_CASES, seed=0, workers=1)
    assert report["cases"] == H.QUICK_CASES
    assert report["failed"] == 0, report["failures"]
    assert set(report["outcomes"]) <= {"exit0", "exit2"}
    # Most cases are refused, but some must still get through, or the mutations test nothing valid.
    assert report["outcomes"].get("exit0", 0) >= 1 and report["outcomes"]["exit2"] >= H.QUICK_CASES // 2
    assert report["slowest_case"]["seconds"] < H.CASE_SECONDS


def test_the_harness_reports_tracebacks_hangs_and_other_exits(tmp_path, monkeypatch):
    case = H.Case(0, {"net.ei": b'import "std"\nnetwork n(T = 2) {\n    return readout(flatten(image([1, 2, 2])))\n}\n'})
    assert H.run_case(case, tmp_path)[0] == "exit0"
    case.files["net.ei"] = b"network n( {"
    assert H.run_case(case, tmp_path)[0] == "exit2"
    import eidsl.api
    monkeypatch.setattr(eidsl.api, "load_graph", lambda *a, **k: 1 / 0)
    outcome, _, output = H.run_case(case, tmp_path)
    assert outcome == "traceback" and "ZeroDivisionError" in output

    def forever(*args, **kwargs):
        while True:
            pass
    monkeypatch.setattr(eidsl.api, "load_graph", forever)
    assert H.run_case(case, tmp_path, seconds=0.5)[0] == "hang"


@pytest.mark.parametrize("seed", [1, 2])
def test_cases_replay_from_their_seed(seed):
    assert H.make_case(seed) == H.make_case(seed)
    assert H.make_case(seed).files != H.make_case(seed + 10).files
