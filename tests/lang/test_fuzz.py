"""A few hundred fuzz cases per run (bench/fuzz.py runs 10,000): generated and mutated specs are
checked, described and compiled, and the only acceptable failure is a located EidslError."""
import collections
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import GENERATORS, Crash, located, make_case, mutate, run_case
from eidsl.errors import EidslError, SpecError, SpecErrors, Span
from eidsl.lang.parser import parse

EXAMPLES = {"network": 120, "mutation": 80, "grammar": 80}


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_fuzz_cases_end_compiled_or_in_a_located_error(kind, tmp_path_factory):
    folder = tmp_path_factory.mktemp(kind)
    outcomes = collections.Counter()

    @settings(max_examples=EXAMPLES[kind], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.randoms(use_true_random=False))
    def case(rng):
        outcomes[run_case(GENERATORS[kind](rng), folder)] += 1     # a Crash fails the test

    case()
    assert sum(outcomes.values()) >= EXAMPLES[kind] // 2
    if kind == "network":
        # The generator must keep reaching the compiler, or the test stops testing it.
        assert outcomes["compiled"] >= EXAMPLES[kind] // 5, outcomes


def test_the_harness_tells_crashes_from_located_errors(tmp_path):
    assert located(SpecError("bad", Span("x.ei", 1, 1)))
    assert not located(SpecError("bad"))
    assert not located(SpecErrors([SpecError("a", Span("x.ei", 1, 1)), SpecError("b")]))
    assert not located(EidslError("no place"))
    (tmp_path / "x").mkdir()
    case = make_case("network", 3)
    case.files["net.ei"] = 'import "std"\nnetwork n(T = 2) {\n    return readout(flatten(image([1, 2, 2])))\n}\n'
    assert run_case(case, tmp_path / "x") == "compiled"     # no parameters: forward only
    case.files["net.ei"] = "network n( {"
    assert run_case(case, tmp_path / "x") == "error:check"


def test_a_crash_is_reported_as_one(tmp_path, monkeypatch):
    import bench.fuzz as fuzz
    monkeypatch.setattr(fuzz, "summarize", lambda graph: 1 / 0)
    case = make_case("network", 0)
    case.files["net.ei"] = 'import "std"\nnetwork n(T = 2) {\n    return readout(layer(flatten(image([1, 2, 2])), 4))\n}\n'
    with pytest.raises(Crash, match="describe: ZeroDivisionError"):
        run_case(case, tmp_path)


def test_generators_replay_from_their_seed():
    for kind in GENERATORS:
        assert make_case(kind, 42).files == make_case(kind, 42).files
    assert make_case("network", 1).files != make_case("network", 2).files


def test_mutations_change_the_text_and_sometimes_still_parse():
    from conftest import SPECS
    text = (SPECS / "mlp.ei").read_text()
    rng = random.Random(0)
    parsed = 0
    for _ in range(50):
        mutated = mutate(rng, text, 1)
        assert mutated != text.encode()
        try:
            parse(mutated.decode(), "m.ei")
            parsed += 1
        except (SpecError, UnicodeDecodeError):
            pass
    assert 0 < parsed < 50
