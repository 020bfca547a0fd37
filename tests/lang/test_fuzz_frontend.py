"""Property: whatever the input, only EidslError escapes the parser, the elaborator and the checks.

A few hundred examples per run keep this fast; `python bench/fuzz_frontend.py --cases 10000`
runs the same generators for much longer.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_specs as F
from eidsl.errors import EidslError
from eidsl.lang.parser import parse, parse_expr

FAST = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
SLOW = settings(FAST, max_examples=60)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FAST
@given(F.arbitrary_text)
def test_arbitrary_text_is_parsed_or_refused(text):
    try:
        parse(text, "fuzz.ei")
    except EidslError as exc:
        assert exc.render().startswith("fuzz.ei:")


@FAST
@given(st.one_of(F.arbitrary_text, F.token_soup))
def test_arbitrary_set_values_are_parsed_or_refused(text):
    try:
        parse_expr(text, "--set x")
    except EidslError as exc:
        assert exc.render().startswith("--set x:")


@FAST
@given(F.arbitrary_bytes)
def test_arbitrary_bytes_only_raise_eidsl_errors(folder, data):
    assert F.run_frontend(data, folder) in ("ok", "error")


@FAST
@given(F.mutated_spec())
def test_mutated_shipped_specs_only_raise_eidsl_errors(folder, data):
    assert F.run_frontend(data, folder) in ("ok", "error")


@FAST
@given(F.token_soup)
def test_token_soup_only_raises_eidsl_errors(folder, text):
    assert F.run_frontend(text, folder) in ("ok", "error")


@SLOW
@given(F.structured_spec())
def test_structured_specs_only_raise_eidsl_errors(folder, text):
    assert F.run_frontend(text, folder) in ("ok", "error")


@SLOW
@given(F.circuit_spec())
def test_random_circuits_only_raise_eidsl_errors(folder, text):
    assert F.run_frontend(text, folder) in ("ok", "error")


def test_the_generators_reach_the_checking_passes(folder):
    """Guard against generators that only ever produce syntax errors: some circuits must pass
    elaboration and fail in (or pass) the checks."""
    outcomes = []

    @settings(FAST, max_examples=60)
    @given(F.circuit_spec())
    def run(text):
        outcomes.append(F.run_frontend(text, folder))

    run()
    assert "ok" in outcomes and "error" in outcomes
