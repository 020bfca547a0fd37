"""Measure parity with the authors' implementation: `python3 -m eidsl.interop.parity [FIXTURES_DIR]`.

For each reference fixture, the reference weights are imported into the eidsl
model built from the matching spec, and the logits are compared with the saved
reference logits (max-abs error over the batch / max-abs of the reference), for
the interpreted network, the generated module and E-I Init's first-layer scale.
"""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
CASES = [("EI-SNN_MLP4_MNIST_b8.pt", "mlp.ei"), ("EI-SNN_VGG8_CIFAR10_b2.pt", "vgg.ei")]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def fixtures_dir() -> Path:
    for base in ROOT.parents:
        if (base / "shared" / "reference-fixtures").is_dir():
            return base / "shared" / "reference-fixtures"
    raise SystemExit("no shared/reference-fixtures folder above the checkout; pass its path")


def generated_model(net, spec: Path):
    from eidsl.interop.codegen import generate
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.py"
        path.write_text(generate(net.plan, net.graph, str(spec)))
        module_spec = importlib.util.spec_from_file_location("parity_model", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    model = module.Model()
    model.load_state_dict(net.state_dict())
    return model


def measure(folder: Path) -> list[dict]:
    from eidsl import api
    from eidsl.interop.deepeisnn import import_deepeisnn
    rows = []
    for name, spec_name in CASES:
        path = folder / name
        if not path.exists():
            continue
        ref = torch.load(path, weights_only=True)
        spec = ROOT / "specs" / spec_name
        net = api.build(spec, paper=True)   # the reference's circuit (specs take paper = false by default)
        import_deepeisnn(net, ref["state_dict"])
        with torch.no_grad():
            eager = net.eval()(ref["input"])
            generated = generated_model(net, spec).eval()(ref["input"])
        fresh = api.build(spec, paper=True)
        scales = api.ei_init(fresh, ref["init_input"], seed=2025)
        first = next(iter(ref["exp_scale"].values()))
        rows.append({"fixture": name, "spec": spec_name, "batch": tuple(ref["input"].shape),
                     "interpreted": rel_err(eager, ref["logits"]), "generated": rel_err(generated, ref["logits"]),
                     "sigma_w layer 1": abs(next(iter(scales.values())) - first) / first,
                     "same argmax": bool((eager.argmax(1) == ref["logits"].argmax(1)).all())})
    return rows


def main() -> None:
    torch.set_num_threads(2)
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else fixtures_dir()
    for row in measure(folder):
        print(f"{row['fixture']} ({row['spec']}, input {row['batch']}): logits rel err interpreted "
              f"{row['interpreted']:.2e}, generated {row['generated']:.2e}; E-I Init sigma_w layer 1 rel err "
              f"{row['sigma_w layer 1']:.1e}; "
              f"same argmax: {row['same argmax']}")


if __name__ == "__main__":
    main()
