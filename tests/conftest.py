from pathlib import Path

import pytest

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
