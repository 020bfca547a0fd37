"""Start-up cost: `import eidsl` loads the language and the IR only (docs/performance.md, Start-up)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_eidsl_loads_no_heavy_module():
    code = ("import sys, eidsl; heavy = ('torch', 'networkx', 'matplotlib', 'tensorboard', 'nir', 'numpy');"
            "print(' '.join(m for m in heavy if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], done.stdout
