"""PNG figures of a run: learning curves, firing rates per layer (E and I), current and weight
histograms, and a spike raster of a few neurons per spiking population."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from eidsl.train import metrics
from eidsl.errors import EidslError

QUANTITIES = ("I_EE", "I_sub", "I_div", "I_int", "W_EE", "W_IE", "W_EI", "g_I")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plots(run: str | Path, out: str | Path | None = None) -> list[Path]:
    run = Path(run)
    records = metrics.read(run / "metrics.jsonl")
    if not records:
        raise EidslError(f"{run}: no finished epoch to plot (metrics.jsonl is missing or empty)")
    out = Path(out) if out is not None else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    paths = [curves(records, out / "curves.png"),
             firing_rates(records, out / "firing_rates.png", _populations(run))]
    paths += histograms(run / "hist", out, _thresholds(run))
    raster_path = raster(run, out / "raster.png")
    if raster_path is not None:
        paths.append(raster_path)
    from eidsl.train.circuit_log import read_log
    circuit = read_log(run)
    if circuit:   # the circuit monitor's log (docs/analysis.md)
        from eidsl.tools.analyze_plot import training
        paths.append(training(circuit, out / "balance_over_training.png"))
    return paths


def curves(records: list[dict], path: Path) -> Path:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    epochs = [r["epoch"] for r in records]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split in ("train", "test"):
        points = [(r["epoch"], r[f"{split}_loss"], r[f"{split}_accuracy"]) for r in records
                  if f"{split}_loss" in r]
        if points:
            e, loss, acc = zip(*points)
            loss_ax.plot(e, loss, marker=".", label=split)
            acc_ax.plot(e, 100 * np.asarray(acc), marker=".", label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


RATE_PANELS = (("firing_rates", "firing rate (spikes per neuron per step)", "spiking populations (train)"),
               ("interneuron_rates", "mean s_I per neuron per step", "rate-coded interneurons (train)"))


def rate_lines(records: list[dict], populations: dict[str, dict] | None = None) -> dict[str, list[dict]]:
    """{metrics key: one line per population: label, inhibitory, epochs, values}, for the panels of
    firing_rates.png. `populations`: config.json's network.populations (signs); without it, names
    ending in `.I` count as inhibitory."""
    populations = populations or {}
    panels: dict[str, list[dict]] = {}
    for key, _, _ in RATE_PANELS:
        layers = list(dict.fromkeys(name for r in records for name in (r.get(key) or {})))
        for layer in layers:
            points = [(r["epoch"], r[key][layer]) for r in records if layer in (r.get(key) or {})]
            sign = populations.get(layer, {}).get("sign") or ("inh" if layer.endswith(".I") else "exc")
            letter = {"exc": "E", "inh": "I"}.get(sign, "·")
            panels.setdefault(key, []).append({"label": f"{letter}  {layer}", "inhibitory": sign == "inh",
                                               "epochs": [e for e, _ in points], "values": [v for _, v in points]})
    return panels


def firing_rates(records: list[dict], path: Path, populations: dict[str, dict] | None = None) -> Path:
    """Spiking populations (E solid, I dashed) in spikes per neuron per step; rate-coded
    interneurons, whose mean s_I is in units of current, in a panel of their own."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    lines = rate_lines(records, populations)
    present = [p for p in RATE_PANELS if p[0] in lines] or list(RATE_PANELS[:1])
    fig, axes = plt.subplots(1, len(present), figsize=(6.5 * len(present), 3.8), squeeze=False)
    for ax, (key, ylabel, title) in zip(axes.flat, present):
        for line, colour in zip(lines.get(key, []), plt.cm.tab10(np.arange(len(lines.get(key, []))) % 10)):
            ax.plot(line["epochs"], line["values"], marker="v" if line["inhibitory"] else "o", markersize=4,
                    linestyle="--" if line["inhibitory"] else "-", color=colour, label=line["label"])
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if lines.get(key):
            ax.legend(fontsize="small")
    return _save(fig, path)


def _populations(run: Path) -> dict[str, dict]:
    try:
        return json.loads((run / "config.json").read_text())["network"].get("populations") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_histograms(folder: Path) -> dict[int, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """{epoch: {layer: {quantity: (counts, edges)}}} from hist/epoch_K.npz files."""
    found: dict[int, dict] = {}
    for file in sorted(folder.glob("epoch_*.npz")):
        match = re.fullmatch(r"epoch_(\d+)\.npz", file.name)
        if not match:
            continue
        layers: dict[str, dict] = {}
        with np.load(file, allow_pickle=False) as data:
            for key in data.files:
                layer, quantity, part = key.rsplit("|", 2)
                if part == "counts":
                    layers.setdefault(layer, {})[quantity] = (data[key], data[f"{layer}|{quantity}|edges"])
        found[int(match.group(1))] = layers
    return found


# What each histogram's values are, for the axis label (currents and weights carry no physical unit).
UNITS = {"I_EE": "excitatory current I_EE (a.u.)", "I_sub": "subtractive inhibition I_sub (a.u.)",
         "I_div": "divisor I_div (a.u.)", "I_int": "integrated current I_int (a.u.)", "W_EE": "weight W_EE",
         "W_IE": "weight W_IE", "W_EI": "weight W_EI", "g_I": "interneuron gain g_I"}


def _thresholds(run: Path) -> dict[str, float]:
    """Each LIF population's theta, from the run's graph.json (for the marker on I_int)."""
    try:
        graph = json.loads((run / "graph.json").read_text())
        return {n["id"]: float(n["theta"]) for n in graph["nodes"] if n.get("model") == "lif"}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def histograms(folder: Path, out: Path, thresholds: dict[str, float] | None = None) -> list[Path]:
    """One figure per layer: a panel per quantity, one line per recorded epoch; on a LIF layer's
    I_int, a marker at theta (the current that makes a neuron at rest fire in one step)."""
    thresholds = thresholds or {}
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    by_epoch = read_histograms(folder)
    if not by_epoch:
        return []
    epochs = sorted(by_epoch)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(epochs)))
    layers = list(dict.fromkeys(layer for e in epochs for layer in by_epoch[e]))
    paths = []
    for layer in layers:
        present = [q for q in QUANTITIES if any(q in by_epoch[e].get(layer, {}) for e in epochs)]
        cols = min(4, len(present))
        rows = -(-len(present) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
        for ax, quantity in zip(axes.flat, present):
            for epoch, colour in zip(epochs, colours):
                if quantity in by_epoch[epoch].get(layer, {}):
                    counts, edges = by_epoch[epoch][layer][quantity]
                    density = counts / max(counts.sum(), 1) / np.diff(edges)
                    ax.stairs(density, edges, color=colour, label=f"epoch {epoch}")
            ax.set_title(quantity)
            ax.set(xlabel=UNITS.get(quantity, quantity), ylabel="density")
            ax.set_yscale("log" if quantity.startswith(("W", "g")) else "linear")
            ax.xaxis.set_major_locator(MaxNLocator(4))
            if quantity == "I_int" and layer in thresholds:
                ax.axvline(thresholds[layer], color="black", linestyle=":", linewidth=1)
                ax.annotate(f"θ = {thresholds[layer]:g}", (thresholds[layer], 0.95), xycoords=("data", "axes fraction"),
                            ha="left", va="top", fontsize="small")
        for ax in list(axes.flat)[len(present):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize="x-small")
        fig.suptitle(f"{layer}: currents and weights over training")
        paths.append(_save(fig, out / f"hist_{_file_name(layer)}.png"))
    return paths


RASTER_NEURONS = 20   # shown per spiking population


def raster(run: Path, path: Path) -> Path | None:
    """Spikes of the first RASTER_NEURONS neurons of every spiking population (E red, I blue) over
    the T steps of one test sample, from the run's last checkpoint. None, with a note on stderr,
    when the run has no checkpoint or its data is not on this machine."""
    import sys
    import torch
    from eidsl.train import checkpoint as ckpt
    from eidsl.train.config import resolve
    from eidsl.train.evaluate import load_data, load_network
    from eidsl.train.monitor import populations
    try:
        net, meta = load_network(run)
        cfg = resolve([("the checkpoint", {"data": meta.get("data"), "data_dir": meta.get("data_dir")})])
        _, test, _ = load_data(net.graph, cfg, trained=True)
    except (EidslError, ckpt.CheckpointError, OSError) as exc:
        print(f"note: no spike raster ({' '.join(str(exc).split())})", file=sys.stderr)
        return None
    x = test[0][0].unsqueeze(0)
    net.eval()
    with torch.no_grad():
        env = net.run(x, keep=True)
    spiking = [p for p in populations(net) if p.spiking]
    if not spiking:
        return None
    plt = _pyplot()
    T = net.T
    fig, axes = plt.subplots(len(spiking), 1, figsize=(7, 1.2 + 1.9 * len(spiking)), squeeze=False, sharex=True)
    for ax, pop in zip(axes.flat, spiking):
        s = env[pop.name].reshape(T, 1, -1)[:, 0, :RASTER_NEURONS]   # (T, neurons) of the one sample
        steps, neurons = torch.nonzero(s > 0, as_tuple=True)
        colour = "tab:blue" if pop.sign == "inh" else "tab:red"
        ax.scatter(steps.numpy() + 1, neurons.numpy(), marker="|", s=90, linewidths=2, color=colour)
        ax.set_ylim(-0.5, min(RASTER_NEURONS, s.shape[1]) - 0.5)
        ax.set_ylabel("neuron", fontsize="small")
        ax.set_title(f"{pop.name} ({'I' if pop.sign == 'inh' else 'E'}), first {s.shape[1]} neurons", fontsize="small")
    axes.flat[-1].set_xlabel("time step t")
    axes.flat[-1].set_xlim(0.5, T + 0.5)
    axes.flat[-1].set_xticks(range(1, T + 1))
    fig.suptitle(f"spike raster of one test sample, epoch {meta.get('epoch')}")
    return _save(fig, path)


def _file_name(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", layer)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path
