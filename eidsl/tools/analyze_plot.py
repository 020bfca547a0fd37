"""PNG figures of `eidsl analyze`: rates, currents, energy by layer and pathway, spectra, and
(for a run logged with the circuit monitor) rates and balance over training.

E is always red and I always blue; thresholds are drawn as dashed lines."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eidsl.train.analyze import PATHWAYS, SATURATED, SILENT

E_COLOUR, I_COLOUR = "#c62828", "#1565c0"
PATHWAY_COLOURS = {"x->E": "#e57373", "x->I": "#64b5f6", "recurrent": "#9575cd", "I-|E sub": "#1e88e5",
                   "I-|E div": "#0d47a1", "E neuron": "#b71c1c", "I neuron": "#90caf9", "pool": "#bdbdbd",
                   "residual sum": "#8d6e63", "readout": "#616161"}
CURRENT_COLOURS = {"I_EE": E_COLOUR, "I_sub": I_COLOUR, "I_div": "#7e57c2", "I_int": "#424242"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def write_figures(result: dict, out: str | Path, run: str | Path | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [rates(result, out / "rates.png"), energy(result, out / "energy.png")]
    if result.get("currents"):
        paths.append(currents(result, out / "currents.png"))
    if result.get("spectra"):
        paths.append(spectra(result, out / "spectra.png"))
    if run is not None:
        from eidsl.train.circuit_log import read_log
        records = read_log(Path(run))
        if records:
            paths.append(training(records, out / "balance_over_training.png"))
    return paths


def _energy_unit(values) -> tuple[str, float]:
    top = max([abs(v) for v in values] + [0.0])
    return ("µJ", 1e6) if top >= 1e6 else ("nJ", 1e3)


def _height(n: int) -> float:
    return max(3.2, 0.28 * n + 1.6)


def rates(result: dict, path: Path) -> Path:
    plt = _pyplot()
    layers: dict[str, dict[str, float]] = {}
    for r in result["firing_rates"].values():
        if r["rate"] is not None:
            layers.setdefault(r["layer"], {})[r["side"]] = r["rate"]
    names = list(layers)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.5, _height(len(names)) + 0.6))
    for offset, side, colour, label in ((-0.2, "E", E_COLOUR, "E (LIF): spikes / neuron / step"),
                                        (0.2, "I", I_COLOUR, "I (ReLU): fraction of units active")):
        vals = [layers[n].get(side, np.nan) for n in names]
        ax.barh(y + offset, vals, 0.4, color=colour, label=label)
    ax.axvline(SILENT, color="k", ls="--", lw=0.8, label=f"silent < {SILENT}")
    ax.axvline(SATURATED, color="k", ls=":", lw=0.8, label=f"LIF saturated > {SATURATED}")
    ax.set_yticks(y, [_short(n, 26) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="rate (fraction per neuron per time step)", xlim=(0, 1.02))
    fig.suptitle(f"{result['network']}: activity per layer ({result['state']})", fontsize=11)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    return _save(fig, path)


def energy(result: dict, path: Path) -> Path:
    plt = _pyplot()
    ops = result["ops"]
    layers = list(ops["by_layer"])
    y = np.arange(len(layers))
    unit, scale = _energy_unit([t["energy_pj"] for t in ops["by_layer"].values()]
                               + [t["ann_energy_pj"] for t in ops["by_layer"].values()])
    fig, (ax, tot) = plt.subplots(1, 2, figsize=(10, _height(len(layers)) + 0.4),
                                  gridspec_kw={"width_ratios": [3, 1.2]})
    left = np.zeros(len(layers))
    for pathway in PATHWAYS:
        vals = np.array([sum(r["per_inference"]["energy_pj"] for r in ops["pathways"]
                             if r["layer"] == l and r["pathway"] == pathway) for l in layers]) / scale
        if vals.any():
            ax.barh(y, vals, 0.65, left=left, color=PATHWAY_COLOURS[pathway], label=pathway)
            left += vals
    ann = np.array([ops["by_layer"][l]["ann_energy_pj"] for l in layers]) / scale
    ax.scatter(ann, y, marker="|", s=200, color="k", zorder=3, label="same net as ANN")
    ax.set_yticks(y, [_short(n, 26) for n in layers], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05 * max(left.max(), ann.max(), 1e-12))
    ax.set(xlabel=f"energy per inference ({unit}, all T steps)",
           title="energy by layer and pathway (compute only, 45 nm)")
    ax.legend(fontsize=7, loc="lower right")
    side = ops["by_population"]
    t_unit, t_scale = _energy_unit([ops["total"]["energy_pj"], ops["total"]["ann_energy_pj"]])
    e, i = side["E"]["energy_pj"] / t_scale, side["I"]["energy_pj"] / t_scale
    tot.bar([0], [e], 0.6, color=E_COLOUR, label="E side")
    tot.bar([0], [i], 0.6, bottom=[e], color=I_COLOUR, label="I side")
    tot.bar([1], [ops["total"]["ann_energy_pj"] / t_scale], 0.6, color="#9e9e9e", label="ANN")
    tot.set_xticks([0, 1], [f"SNN\nT = {ops['T']}", "ANN\n1 pass"])
    tot.set(ylabel=f"{t_unit} per inference", title="total")
    tot.legend(fontsize=7)
    return _save(fig, path)


def currents(result: dict, path: Path) -> Path:
    plt = _pyplot()
    cur = result["currents"]
    names = list(cur)
    fig, (ax, vax) = plt.subplots(1, 2, figsize=(max(9, 1.0 * len(names) + 5), 3.8),
                                  gridspec_kw={"width_ratios": [max(3, len(names)), max(2, len(names) * 0.6)]})
    x = np.arange(len(names))
    quantities = [q for q in CURRENT_COLOURS if any(q in cur[n] for n in names)]
    w = 0.8 / max(len(quantities), 1)
    for k, q in enumerate(quantities):
        means = [cur[n][q]["mean"] if q in cur[n] else np.nan for n in names]
        stds = [cur[n][q]["std"] if q in cur[n] else np.nan for n in names]
        ax.bar(x + (k - (len(quantities) - 1) / 2) * w, means, w, yerr=stds, capsize=2,
               color=CURRENT_COLOURS[q], label=q)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, [_short(n) for n in names], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="current (a.u., mean ± s.d.)", title="circuit currents (I_div before stabilisation)")
    ax.legend(fontsize=7)
    with_v = [n for n in names if "v_over_theta" in cur[n]]
    xv = np.arange(len(with_v))
    vm = [cur[n]["v_over_theta"]["mean"] for n in with_v]
    vs = [cur[n]["v_over_theta"]["std"] for n in with_v]
    vax.errorbar(xv, vm, yerr=vs, fmt="o", color=E_COLOUR, capsize=3, label="mean ± s.d.")
    vax.scatter(xv, [cur[n]["v_over_theta"]["p95"] for n in with_v], marker="^", color="k", label="95th pct")
    vax.axhline(1.0, color="k", ls="--", lw=0.8, label="threshold θ")
    vax.set_xticks(xv, [_short(n) for n in with_v], rotation=30, ha="right", fontsize=8)
    vax.set(ylabel="membrane v / θ", title="membrane before spiking")
    vax.legend(fontsize=7)
    return _save(fig, path)


def spectra(result: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    cmap = plt.get_cmap("viridis")
    items = list(result["spectra"].items())
    for k, (name, s) in enumerate(items):
        sv = np.asarray(s["effective"]["singular_values"])
        if sv.size and sv[0] > 0:
            ax.plot(np.arange(1, sv.size + 1), sv / sv[0], color=cmap(k / max(len(items) - 1, 1)),
                    label=f"{_short(name)} (H = {s['svd_entropy']:.2f})")
    ax.set(xlabel="index (largest first)", ylabel="σ_i / σ_max", yscale="log",
           title="singular values of each layer's effective weight (H: normalised SVD entropy)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def training(records: list[dict], path: Path) -> Path:
    """Rates of every population and each E layer's balance over training steps."""
    plt = _pyplot()
    steps = [r["step"] for r in records]
    fig, (rax, bax, cax) = plt.subplots(1, 3, figsize=(13, 3.6))
    pops = list(records[-1]["rates"])
    for name in pops:
        inh = name.endswith(".I") or ".I" in name.rsplit(".", 1)[-1]
        side = records[-1].get("sides", {}).get(name, "I" if inh else "E")
        rax.plot(steps, [r["rates"].get(name, np.nan) for r in records], color=E_COLOUR if side == "E" else I_COLOUR,
                 alpha=0.4 + 0.6 * (pops.index(name) + 1) / len(pops), lw=1, label=_short(name))
    rax.axhline(SILENT, color="k", ls="--", lw=0.8)
    rax.set(xlabel="training step", ylabel="rate", title="rates (E red, I blue)")
    rax.legend(fontsize=6, ncol=2)
    layers = list(records[-1]["currents"])
    cmap = plt.get_cmap("viridis")
    for k, name in enumerate(layers):
        c = cmap(k / max(len(layers) - 1, 1))
        bax.plot(steps, [r["currents"].get(name, {}).get("inh_exc_ratio", np.nan) or np.nan for r in records],
                 color=c, label=_short(name))
        cax.plot(steps, [r["currents"].get(name, {}).get("ei_correlation", np.nan) or np.nan for r in records],
                 color=c, label=_short(name))
    bax.axhline(1.0, color="k", ls="--", lw=0.8)
    bax.set(xlabel="training step", ylabel="mean I_sub / mean I_EE", title="inhibition / excitation")
    cax.set(xlabel="training step", ylabel="corr(I_EE, I_sub) per unit", title="E-I input correlation",
            ylim=(-1, 1))
    bax.legend(fontsize=6)
    return _save(fig, path)
