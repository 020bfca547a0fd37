import os
from pathlib import Path

import pytest

# The compiled kernels compile once per shape rank, dtype and LIF setting and machine: minutes on
# two cores, for values equal to the eager path's (tests/compiler/test_kernels.py checks them, with the
# kernels switched on there). Every other test, and the CLI subprocesses it starts, takes the eager
# path; `EIDSL_KERNELS=compiled pytest` runs the whole suite on the kernels instead.
os.environ.setdefault("EIDSL_KERNELS", "eager")

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
# The shared folder sits next to the main checkout; worktrees live one level deeper.
SHARED = next((p / "shared" for p in ROOT.parents if (p / "shared" / "reference-fixtures").is_dir()),
              ROOT.parent / "shared")
FIXTURES = SHARED / "reference-fixtures"


@pytest.fixture(autouse=True)
def _few_threads():
    import torch
    torch.set_num_threads(2)


def fixture(name: str):
    import torch
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"reference fixture {path} not present")
    return torch.load(path, weights_only=True)
