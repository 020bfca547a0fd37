"""One picture of a sweep: best test accuracy along the first grid axis, a line per other combination."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def plot_sweep(results: list[dict], keys: list[str], path: Path) -> Path | None:
    if not results or not keys:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, rest = keys[0], keys[1:]
    lines: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in results:
        label = ", ".join(f"{k}={r['cell'][k]}" for k in rest) or "accuracy"
        acc = r.get("best_acc")
        lines[label].append((r["cell"][x_key], float("nan") if acc is None else 100 * acc))
    xs = list(dict.fromkeys(r["cell"][x_key] for r in results))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in lines.items():
        got = dict(points)
        ax.plot(range(len(xs)), [got.get(x, float("nan")) for x in xs], marker="o", label=label)
    ax.set_xticks(range(len(xs)), xs)
    ax.set_xlabel(x_key)
    ax.set_ylabel("best test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
