from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SHARED = ROOT.parent / "shared"
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
