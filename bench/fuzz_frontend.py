"""Fuzz the front end for a long time: only EidslError may ever escape parse/elaborate/check.

    python bench/fuzz_frontend.py --cases 10000 [--seed 0] [--family all]

Runs the generators of tests/fuzz_specs.py (arbitrary text and bytes, mutations of the
shipped specs, grammar-shaped token soup and structured specs) through Hypothesis with
`--cases` examples per family, and prints how many inputs were accepted, how many were
refused with a located error, and how long it took. Any other exception is a bug: it is
shrunk by Hypothesis, printed, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

import fuzz_specs as F  # noqa: E402

FAMILIES = {
    "text": F.arbitrary_text,
    "bytes": F.arbitrary_bytes,
    "mutation": F.mutated_spec(),
    "tokens": F.token_soup,
    "structured": F.structured_spec(),
    "circuit": F.circuit_spec(),
}


def fuzz(name: str, cases: int, rng_seed: int, folder: Path) -> tuple[Counter, float]:
    outcomes: Counter = Counter()

    @seed(rng_seed)
    @settings(max_examples=cases, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(FAMILIES[name])
    def run(source):
        outcomes[F.run_frontend(source, folder)] += 1

    start = time.perf_counter()
    run()
    return outcomes, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="examples per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=["all", *FAMILIES], default="all")
    args = parser.parse_args()
    names = list(FAMILIES) if args.family == "all" else [args.family]
    total: Counter = Counter()
    print(f"{'family':<12}{'cases':>8}{'accepted':>10}{'refused':>10}{'seconds':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                outcomes, seconds = fuzz(name, args.cases, args.seed, Path(tmp))
            except Exception as exc:   # the shrunk counterexample was printed by Hypothesis
                print(f"{name}: CRASH {type(exc).__name__}: {exc}")
                return 1
            n = sum(outcomes.values())
            total += outcomes
            print(f"{name:<12}{n:>8}{outcomes['ok']:>10}{outcomes['error']:>10}{seconds:>10.1f}")
    print(f"{'total':<12}{sum(total.values()):>8}{total['ok']:>10}{total['error']:>10}")
    print("no exception other than EidslError escaped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
