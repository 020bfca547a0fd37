"""What a lossy NIR export costs, measured: the exported graph and eidsl's network on one batch.

The exported graph runs in eidsl's own NIR runner (eidsl.interop.nir_run, nirtorch underneath);
eidsl's network runs as trained. The batch is the test split of the user's data set
(`--data`), else of the spec's (its train block, else mnist5k); when the spec's data set is
not on this machine or does not fit the network, random inputs stand in and the report says
so, since a missing file must not block an export.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from eidsl import ir
from eidsl.errors import EidslError

DEFAULT_SAMPLES = 256


@dataclass
class Deviation:
    rel_error: float                # max |NIR - eidsl| / max |eidsl| over the batch's logits
    samples: int
    source: str                     # what the batch was
    acc_eidsl: float | None = None  # None: no labels (random inputs)
    acc_nir: float | None = None
    agree: float = 0.0              # fraction of samples whose predicted class is the same

    def line(self) -> str:
        text = (f"measured deviation of the exported graph from eidsl on {self.source}: logits relative error "
                f"{self.rel_error:.3g} (max-abs difference / max-abs eidsl logit)")
        if self.acc_eidsl is not None:
            text += (f"; accuracy {100 * self.acc_eidsl:.1f}% in eidsl, {100 * self.acc_nir:.1f}% as exported")
        return text + f"; same predicted class for {100 * self.agree:.1f}% of samples"

    def as_metadata(self) -> str:
        return self.line().removeprefix("measured deviation of the exported graph from eidsl on ")


def batch(graph: ir.Graph, data: str | None, data_dir, samples: int, seed: int = 0):
    """(inputs, labels or None, description)."""
    from eidsl.data import datasets
    from eidsl.train.evaluate import check_data_fits
    if samples < 1:
        raise EidslError(f"--samples {samples}: give at least 1")
    inp = graph.node(graph.input_name)
    name = data or graph.train.get("data") or "mnist5k"
    try:
        _, test, info = datasets.load(name, data_dir, T=inp.T, augment=False)
        check_data_fits(graph, info, trained=True)
    except EidslError as exc:
        if data is not None:        # asked for: its problem is the user's to see
            raise
        why = " ".join(str(exc).split())
        return _random(inp, samples, seed), None, (f"{samples} random inputs (the spec's data set '{name}' "
                                                   f"could not be used: {why}; --data names another)")
    n = min(samples, len(test))
    xs, ys = zip(*(test[i] for i in range(n)))
    return torch.stack(xs), torch.tensor(ys), f"{n} {info.name} test samples"


def _random(inp, samples: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if inp.encoding == "events":
        return (torch.rand(samples, inp.T, *inp.shape, generator=gen) < 0.1).float()
    return torch.rand(samples, *inp.shape, generator=gen)


@torch.no_grad()
def measure(graph: ir.Graph, net, exported, x: torch.Tensor, y: torch.Tensor | None, source: str,
            dt: float = 1.0) -> Deviation:
    from eidsl.interop import nir_run
    inp = graph.node(graph.input_name)
    net.eval()
    ours = net(x)
    theirs = nir_run.run(exported, x, inp.T, events=inp.encoding == "events", dt=dt)
    theirs = theirs.reshape(ours.shape)
    scale = ours.abs().max().clamp_min(1e-12)
    dev = Deviation(float((theirs - ours).abs().max() / scale), len(x), source,
                    agree=float((theirs.argmax(1) == ours.argmax(1)).float().mean()))
    if y is not None:
        dev.acc_eidsl = float((ours.argmax(1) == y).float().mean())
        dev.acc_nir = float((theirs.argmax(1) == y).float().mean())
    return dev
