"""One rich table for the cases, one for scaling, and the targets of issue 5 (met or not)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

TARGETS = [  # (case, ratio key, bound, wording)
    ("vgg8", "ei/bn", 1.35, "E-I VGG-8 step <= 1.35x BN-SNN"),
    ("vgg8", "ei/floor", 1.3, "E-I VGG-8 step <= 1.3x conv floor"),
    ("resnet18", "ei/bn", 1.35, "E-I ResNet-18 step <= 1.35x BN-SNN"),
    ("resnet18", "ei/floor", 1.3, "E-I ResNet-18 step <= 1.3x conv floor"),
    ("mlp8", "ei/bn", 1.35, "E-I MLP-8 step <= 1.35x BN-SNN"),
    ("mlp8", "ei/floor", 1.3, "E-I MLP-8 step <= 1.3x linear floor"),
    ("vgg8", "mem ei/bn", 1.2, "E-I VGG-8 peak memory <= 1.2x BN-SNN"),
    ("vgg8", "compiled/eager", 0.8, "compiled E-I VGG-8 step <= 0.8x eager"),
]


def _f(v, fmt="{:.0f}") -> str:
    return "" if v is None else fmt.format(v)


_TIMED = {"ei/bn": ("ei", "bn"), "ei/floor": ("ei", "floor"), "compiled/eager": ("ei_compiled", "ei")}


def rep_range(case: dict, key: str) -> tuple[float, float] | None:
    """Lowest and highest per-repetition value of a time ratio: on a shared machine the median's
    verdict against a bound means little when the bound lies inside this range."""
    if key not in _TIMED or "samples_ms" not in case:
        return None
    a, b = (case["samples_ms"].get(k) for k in _TIMED[key])
    if not a or not b:
        return None
    ratios = [x / y for x, y in zip(a, b)]
    return min(ratios), max(ratios)


def targets(results: dict) -> list[dict]:
    rows = []
    for case, key, bound, text in TARGETS:
        value = results["cases"].get(case, {}).get("ratio", {}).get(key)
        if value is not None:
            flop = results["cases"][case]["ratio"].get(f"flop {key}")
            rows.append({"target": text, "value": value, "bound": bound, "met": value <= bound, "flop_ratio": flop,
                         "range": rep_range(results["cases"][case], key)})
    vgg = results["cases"].get("vgg8", {})
    if "compile_s" in vgg:
        rows.append({"target": "torch.compile E-I VGG-8: 0 graph breaks", "value": vgg["graph_breaks"],
                     "bound": 0, "met": vgg["graph_breaks"] == 0})
        rows.append({"target": f"torch.compile E-I VGG-8: compile <= 60 s ({vgg['compile_cache']})",
                     "value": vgg["compile_s"],
                     "bound": 60, "met": vgg["compile_s"] <= 60})
    return rows


def show(results: dict, console: Console | None = None) -> None:
    console = console or Console()
    m = results["meta"]
    t = Table(title=f"eidsl training step, {m['setup']['device']}, {m['threads']} threads, "
                    f"amp={m['setup']['amp'] or 'fp32'}, medians of {m['reps']} interleaved reps")
    cols = ["case", "batch", "E-I ms", "compiled ms", "BN-SNN ms", "floor ms", "E-I/BN", "E-I/floor",
            "flop E-I/BN", "flop E-I/floor", "comp/eager", "peak MB E-I", "peak MB BN", "mem E-I/BN", "compile s", "breaks"]
    for c in cols:
        t.add_column(c, justify="left" if c == "case" else "right")
    for key, r in results["cases"].items():
        ms, ratio, peak = r["ms"], r["ratio"], r.get("peak_mb", {})
        t.add_row(r["title"], str(r["batch"]), _f(ms.get("ei")), _f(ms.get("ei_compiled")), _f(ms.get("bn")),
                  _f(ms.get("floor")), _f(ratio.get("ei/bn"), "{:.2f}"), _f(ratio.get("ei/floor"), "{:.2f}"),
                  _f(ratio.get("flop ei/bn"), "{:.2f}"), _f(ratio.get("flop ei/floor"), "{:.2f}"),
                  _f(ratio.get("compiled/eager"), "{:.2f}"), _f(peak.get("ei")), _f(peak.get("bn")),
                  _f(ratio.get("mem ei/bn"), "{:.2f}"), _f(r.get("compile_s"), "{:.0f}"),
                  _f(r.get("graph_breaks"), "{}"))
    console.print(t)
    before = {k: r["ratio"] for k, r in results["cases"].items() if "before/after" in r["ratio"]}
    if before:
        b = Table(title="before issue 5 (plain autograd formulas) vs now, same run")
        for c in ("case", "before ms", "now ms", "before/now", "before E-I/BN", "now E-I/BN", "before peak MB"):
            b.add_column(c, justify="right")
        for key, ratio in before.items():
            r = results["cases"][key]
            b.add_row(r["title"], _f(r["ms"]["ei_plain"]), _f(r["ms"]["ei"]), _f(ratio["before/after"], "{:.2f}"),
                      _f(ratio["before ei/bn"], "{:.2f}"), _f(ratio["ei/bn"], "{:.2f}"),
                      _f(r.get("peak_mb", {}).get("ei_plain")))
        console.print(b)
    sc = results.get("scaling")
    if sc:
        s = Table(title=f"scaling, {sc['case']} (E-I and BN-SNN eager; medians, per-sample cost from the fastest rep)")
        for c in ("axis", "T", "batch", "E-I ms", "BN ms", "E-I min ms", "BN min ms", "E-I/BN", "E-I ms per T*B sample"):
            s.add_column(c, justify="right")
        for row in sc["rows"]:
            s.add_row(row["axis"], str(row["T"]), str(row["batch"]), _f(row["ei_ms"]), _f(row["bn_ms"]),
                      _f(row["ei_min_ms"]), _f(row["bn_min_ms"]), _f(row["ei/bn"], "{:.2f}"),
                      _f(row["ei_ms_per_sample"], "{:.2f}"))
        console.print(s)
    lif = results.get("lif")
    if lif:
        s = Table(title=f"multi-step LIF, forward+backward, {lif['shape']}")
        for c in ("variant", "ms", "vs autograd loop", "saved MB"):
            s.add_column(c, justify="right")
        for name, row in lif["variants"].items():
            s.add_row(name, _f(row.get("ms"), "{:.1f}"), _f(row.get("ratio"), "{:.2f}"),
                      _f(row.get("saved_mb"), "{:.1f}") if "error" not in row else row["error"][:40])
        console.print(s)
    if results.get("amp"):
        a = results["amp"]
        console.print(f"bf16 autocast vs fp32 logits ({a['case']}): max relative difference "
                      f"{a['max_rel_diff']:.2e}, argmax agreement {a['argmax_agreement']:.3f}")
    rows = results.get("targets") or []
    if rows:
        s = Table(title="issue 5 targets")
        for c in ("target", "measured", "reps min-max", "flop ratio", "met"):
            s.add_column(c)
        for row in rows:
            span = row.get("range")
            s.add_row(row["target"], f"{row['value']:.2f}", f"{span[0]:.2f}-{span[1]:.2f}" if span else "",
                      _f(row.get("flop_ratio"), "{:.2f}"), "yes" if row["met"] else "NO")
        console.print(s)
