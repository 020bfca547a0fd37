"""Start-up cost: `import eidsl` loads the language and the IR only (docs/performance.md, Start-up)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_eidsl_loads_no_heavy_module():
    code = ("import sys, eidsl; heavy = ('torch', 'networkx', 'matplotlib', 'tensorboard', 'nir', 'numpy');"
            "print(' '.join(m for m in heavy if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], done.stdout


def test_cold_kernel_cache_is_announced_once(tmp_path, monkeypatch):
    """The first compile with nothing cached says so (the trainer prints it); a cached one does not."""
    import torch

    from eidsl_compiler import kernels
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    # The notice, not inductor, is tested: "compiling" writes an empty file, "loading" doubles.
    monkeypatch.setattr(kernels, "_build", lambda body, args, path: (os.makedirs(os.path.dirname(path), exist_ok=True),
                                                                   open(path, "w").close()))
    monkeypatch.setattr(kernels, "_load", lambda path: lambda inputs: 2 * inputs[0])
    monkeypatch.setattr(kernels, "_ACTIVE", True)
    said = []

    def double(x):
        return 2 * x
    for _ in range(2):                 # two processes: a fresh kernel each, the same cache folder
        kernels.on_cold_compile(lambda: said.append("compiling kernels (once)…"))
        run = kernels.kernel(double)
        assert torch.equal(run(torch.ones(3)), torch.full((3,), 2.0))
        run(torch.ones(4))
    assert said == ["compiling kernels (once)…"]
    assert len(os.listdir(tmp_path / "eidsl-kernels")) == 1
    kernels.on_cold_compile(None)


def test_digits_load_without_sklearn_import_and_equal_sklearns():
    code = ("import sys; from eidsl.data.packaged import _digits_arrays; x, y = _digits_arrays();"
            "print(x.shape, y.shape, 'sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["(1797,", "8,", "8)", "(1797,)", "False"], done.stdout
    import numpy as np
    from sklearn.datasets import load_digits

    from eidsl.data.packaged import _digits_arrays
    x, y = _digits_arrays()
    ref = load_digits()
    assert np.array_equal(x, ref.images) and np.array_equal(y, ref.target)
