"""Hostile fuzzing of `eidsl check`: every mutated spec must exit 0 or 2, fast, without a traceback.

Each case is a shipped spec (or the standard library next to one) after 1-4 mutations: byte and
token mutations (bench/fuzz.py's `mutate`) and hostile insertions aimed at the limits of
eidsl/limits.py: long words and strings, huge numbers and lists, deep nesting, large and nested
loops, recursive motifs, odd line separators, full-width digits, negative inits, bad training
settings and hostile `--set` values. The case runs through the real command line (`eidsl check`,
in-process through typer's runner, so the exit status is the CLI's) under a per-case alarm.

A case fails when its exit status is not 0 or 2, the output holds a traceback or an internal
error, or it runs past --seconds (default 10: the limit docs/reliability.md promises).

    python3 bench/fuzz_hostile.py                  # 10,000 cases on 2 processes
    python3 bench/fuzz_hostile.py --quick          # 300 cases, as CI runs them
    python3 bench/fuzz_hostile.py --replay 1234    # print one case and its output
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import random
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fuzz import SHIPPED, STD, mutate  # noqa: E402

QUICK_CASES = 300
CASE_SECONDS = 10.0

# Text that pushes on one limit each; {n} is replaced by a random size. Statements go in at the
# start of a line inside a block (so they reach elaboration), expressions as `q = EXPR` there or
# anywhere, raw text anywhere.
STATEMENTS = [
    "for i in range({n}) {{ for j in range({n}) {{ q = i * j + 1 }} }}",
    "l = []\n for i in range({n}) {{ l = l + [range({n})] }}",
    "l = [0] * {n}\n for i in range({n}) {{ b = l == l }}",
    's = "xxxxxxxxxx"\n for i in range(40) {{ s = s + s }}',
    "for i in range({n}) {{ q = m_{n}(x) }}",
    "q = r(x, 0)",
    "exc Q = lif(4, gain = -3)\n x -> Q : dense(init = -1)",
]
EXPRESSIONS = [
    "a" * 30_000 + " + )", '"' + "s" * 20_000 + '"', "9" * 400, "[" * 400 + "]" * 400,
    "(" * 300 + "1" + ")" * 300, "1" + " + 1" * 3000, "[] * (2 ** 63)", "[0] * (2 ** 40)", "range(2 ** 62)",
    "2 ** 4000", "1e308 * 10", "-(2 ** 64) * 2", "image([{n}] * 300, 4)", "image([1] * {n}, 2)",
    "{{true: 1, 1: 2}}", "{{true: 1}}[1]", "uniform(-1, 1)", "normal(-5, 1)", "[range({n})] * {n}",
]
RAW = [
    "\u2028", "\f", "\x85", "\uff13", "\u00a0", "\ufeff", "init = -1", "gain = -3",
    "\ntrain {{\n    epochs = -1\n}}\n", "\ntrain {{\n    batch_size = 0\n}}\n",
    "\ntrain {{\n    lr = 1e308 * 10\n}}\n", "\ntrain {{\n    epochs = 99999999999999999999\n}}\n",
    "\ntrain {{\n    augment = 1\n}}\n",
    "\nmotif r(x, d) {{\n    return r(x, d + 1)\n}}\n",
    "\nmotif m_{n}(x) {{\n    exc E = lif(1)\n    x -> E : dense()\n    return E\n}}\n",
]
HOSTILE_SETS = ["1", "-1", "0", "true", "[1] * 9", "[" * 200 + "]" * 200, "9" * 50, "1e999", "x" * 20_000,
                '"ei"', "range(100000)", "[0] * (2 ** 63)", "\uff11", "2 ** 63", "{true: 1}[1]"]


@dataclass
class Case:
    seed: int
    files: dict[str, bytes]
    sets: dict[str, str] = field(default_factory=dict)


def make_case(seed: int) -> Case:
    rng = random.Random(f"hostile:{seed}")
    target = rng.choice([*SHIPPED, "std.ei"])
    root = target if target != "std.ei" else rng.choice(list(SHIPPED))
    text = STD if target == "std.ei" else SHIPPED[root]
    data = mutate(rng, text, rng.choice([0, 1, 1, 2])) if rng.random() < 0.8 else text.encode()
    for _ in range(rng.choice([1, 1, 2])):
        n = rng.choice([10, 1000, 100_000, 10**6, 10**9])
        kind = rng.choice(["statement", "statement", "expression", "raw"])
        lines = [i + 1 for i in range(len(data)) if data[i:i + 5] == b"\n    "] or [len(data)]
        if kind == "raw":
            snippet, at = rng.choice(RAW).format(n=n), rng.randrange(len(data) + 1)
        else:
            if kind == "statement":
                snippet = rng.choice(STATEMENTS).format(n=n)
            else:
                snippet = "q = " + rng.choice(EXPRESSIONS).format(n=n)
            snippet, at = "    " + snippet + "\n", rng.choice(lines)
        data = data[:at] + snippet.encode() + data[at:]
    files = {"net.ei": SHIPPED[root].encode()}
    files["std.ei" if target == "std.ei" else "net.ei"] = data
    sets = {}
    if rng.random() < 0.3:
        name = rng.choice(["T", "depth", "family", "input", "ei_init", "width", "classes", "ratio"])
        sets[name] = rng.choice(HOSTILE_SETS)
    return Case(seed, files, sets)


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_case(case: Case, folder: Path, seconds: float = CASE_SECONDS) -> tuple[str, float, str]:
    """(outcome, seconds, output): 'exit0', 'exit2', or a failure: 'exitN', 'traceback', 'hang'."""
    from typer.testing import CliRunner

    from eidsl.cli import app
    for old in folder.iterdir():
        old.unlink()
    for name, content in case.files.items():
        (folder / name).write_bytes(content)
    args = ["check", str(folder / "net.ei")]
    for key, value in case.sets.items():
        args += ["--set", f"{key}={value}"]
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.perf_counter()
    try:
        result = CliRunner().invoke(app, args, catch_exceptions=True)
    except _Timeout:
        return "hang", time.perf_counter() - start, ""
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return "traceback", elapsed, f"{type(result.exception).__name__}: {result.exception}"
    if "Traceback" in output or "internal error" in output:
        return "traceback", elapsed, output[-2000:]
    return f"exit{result.exit_code}", elapsed, output


def _worker(seeds: list[int]) -> list[tuple[int, str, float, str]]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = []
    with tempfile.TemporaryDirectory(prefix="eidsl-hostile-") as tmp:
        for seed in seeds:
            outcome, seconds, output = run_case(make_case(seed), Path(tmp))
            out.append((seed, outcome, seconds, "" if outcome in ("exit0", "exit2") else output[:500]))
    return out


def campaign(cases: int, seed: int, workers: int) -> dict:
    seeds = [seed + i for i in range(cases)]
    chunks = [seeds[i:i + 25] for i in range(0, len(seeds), 25)]
    counts: collections.Counter = collections.Counter()
    failures: list = []
    slowest = (0.0, None)
    start = time.perf_counter()
    if workers <= 1:
        results = map(_worker, chunks)
    else:
        pool = multiprocessing.get_context("fork").Pool(workers)
        results = pool.imap_unordered(_worker, chunks)
    for chunk in results:
        for case_seed, outcome, seconds, output in chunk:
            counts[outcome] += 1
            slowest = max(slowest, (seconds, case_seed), key=lambda s: s[0])
            if outcome not in ("exit0", "exit2"):
                failures.append({"seed": case_seed, "outcome": outcome, "output": output})
    if workers > 1:
        pool.close()
        pool.join()
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"cases": sum(counts.values()), "seconds": round(time.perf_counter() - start, 1), "workers": workers,
            "outcomes": dict(sorted(counts.items())), "slowest_case": {"seconds": round(slowest[0], 2), "seed": slowest[1]},
            "peak_rss_mib": round(peak / 1024), "failures": failures[:20], "failed": len(failures)}


def replay(seed: int) -> None:
    case = make_case(seed)
    for name, content in case.files.items():
        print(f"==== {name}" + (f"  (--set {case.sets})" if case.sets and name == "net.ei" else ""))
        text = content.decode(errors="replace")
        print(text if len(text) < 4000 else text[:2000] + f"\n... ({len(text):,} characters)")
    with tempfile.TemporaryDirectory() as tmp:
        outcome, seconds, output = run_case(case, Path(tmp))
    print(f"outcome: {outcome} in {seconds:.2f} s\n{output[:3000]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_CASES} cases, as CI runs them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--replay", type=int, metavar="SEED")
    args = ap.parse_args(argv)
    if args.replay is not None:
        replay(args.replay)
        return 0
    report = campaign(QUICK_CASES if args.quick else args.cases, args.seed, args.workers)
    print(json.dumps(report, indent=1))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
