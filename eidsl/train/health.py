"""Training watches its own health: at the end of each epoch, a population that was saturated
or silent in every sampled batch, a non-finite current, or a broken Dale's law becomes one
warning naming the layer, the likely cause and a fix (recorded in metrics.jsonl; `--strict`
stops the run on it).

Thresholds: a spiking population is saturated when its rate stayed above SATURATED, silent
when it stayed below SILENT, in every batch whose rates were measured; rate-coded
interneurons (ReLU) are silent when their mean s_I stayed below QUIET (they then inhibit
nothing). The diagnosis runs only when something is wrong: one extra forward on the
epoch's last batch to read the integrated currents.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from eidsl_compiler.network import Network
from eidsl_compiler.plan import walk

from eidsl import ir
from eidsl.train import probe
from eidsl.errors import EidslError
from eidsl.train.monitor import Population

SATURATED = 0.95
SILENT = 0.005
QUIET = 1e-6
DIVISIVE_FIX = "lif(n, gain = gain_control, bias = -0.35)"


class HealthError(EidslError):
    """`--strict`: an epoch ended with a health warning; the run was saved first."""
    exit_code = 5


@dataclass(frozen=True)
class HealthWarning:
    kind: str      # saturated | silent | nonfinite | dale
    layer: str     # population (or parameter, for dale)
    message: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.layer}"

    def to_json(self) -> dict:
        return asdict(self)


def rate_flags(pops: list[Population], rate_min: dict[str, float],
               rate_max: dict[str, float]) -> dict[str, str]:
    """{population: "saturated" | "silent"} from each population's extreme batch rates."""
    flags = {}
    for p in pops:
        if p.name not in rate_min:
            continue
        if p.spiking and rate_min[p.name] > SATURATED:
            flags[p.name] = "saturated"
        elif rate_max[p.name] < (SILENT if p.spiking else QUIET):
            flags[p.name] = "silent"
    return flags


def check(net: Network, pops: list[Population], flags: dict[str, str], rates: dict[str, float],
          epoch: int, x: torch.Tensor | None) -> list[HealthWarning]:
    """Every warning for this epoch, in plan order: rates (with their diagnosis), non-finite currents, Dale."""
    found: list[HealthWarning] = []
    env = _currents(net, x) if (flags and x is not None) else {}
    by_name = {p.name: p for p in pops}
    # A layer fed by a broken one is broken because of it: one warning, at the root, names both.
    roots: dict[str, list[str]] = {}
    for name in flags:
        root = _upstream(net, name, flags)
        roots.setdefault(root or name, []).extend([name] if root else [])
    for name, consequences in roots.items():
        message = _rate_message(net, by_name[name], flags[name], rates, flags, epoch, env)
        if consequences:
            message += "; as a result " + ", ".join(f"'{c}' is {flags[c]}" for c in consequences) + " too"
        found.append(HealthWarning(flags[name], name, message))
    if x is not None:
        with probe.frozen(net):   # eval mode: BatchNorm statistics stay as training left them
            bad = probe.first_nonfinite(net, x)
        if bad is not None:
            found.append(HealthWarning("nonfinite", bad.layer, _nonfinite_message(bad, epoch)))
    found += dale_warnings(net)
    return found


def dale_warnings(net: Network) -> list[HealthWarning]:
    """Sign-constrained parameters holding negative entries (a write that bypassed the optimiser's
    projection and the forward's check, e.g. through `.data`)."""
    paths = [path for path, spec in net.param_specs.items() if spec.nonneg]
    if not paths:
        return []
    with torch.no_grad():
        counts = torch.stack([(net.tensor(p) < 0).sum() for p in paths]).tolist()
    return [HealthWarning("dale", path, f"Dale's law is broken: {path} holds {n} negative entries, although it is "
                                        "sign-constrained; something changed it outside an optimizer step (a write "
                                        "through `.data`?). Fix: call net.clamp_() after such a change, or set "
                                        "`dale = false` on the population if the sign should be free")
            for path, n in zip(paths, counts) if n]


# ---------------------------------------------------------------- diagnosis


@torch.no_grad()
def _currents(net: Network, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with probe.frozen(net):
        return net.run(x, keep=True)


def _rate_message(net: Network, pop: Population, kind: str, rates: dict[str, float], flags: dict[str, str],
                  epoch: int, env: dict[str, torch.Tensor]) -> str:
    what = {"E": "excitatory", "I": "inhibitory", "s_I": "interneuron"}.get(pop.group, "")
    where = " (inside a recurrent loop)" if pop.in_loop else ""
    rate = rates.get(pop.name, float("nan"))
    if not pop.spiking:
        return (f"interneurons '{pop.name}'{where} were silent for all of epoch {epoch} (mean s_I {rate:.2g}): "
                f"s_I = max(0, W_IE·input) is zero, so the populations they inhibit get no inhibition. "
                f"{_input_cause(net, pop, flags) or 'Likely cause: W_IE shrank to zero (a learning rate too large for it).'} "
                "Fix: lower --lr, or check the layer before it")
    state = "saturated" if kind == "saturated" else "silent"
    head = (f"{what} layer '{pop.name}'{where} was {state} for all of epoch {epoch}: firing rate {rate:.3f} "
            f"({'above ' + str(SATURATED) if kind == 'saturated' else 'below ' + str(SILENT)} in every measured batch)")
    rec = net.graph.node(pop.name) if net.graph is not None else None
    theta = getattr(rec, "theta", 1.0)
    I_int = env.get(f"{pop.name}:I_int")
    current = f"; its integrated current I_int averages {float(I_int.float().mean()):.3g} against the threshold " \
              f"theta = {theta:g}" if I_int is not None else ""
    return f"{head}{current}. {_cause(net, pop, rec, kind, flags)}"


def _integrate_step(net: Network, name: str):
    return next((s for s in walk(net.plan.steps) if s.op == "integrate" and s.node == name), None)


def _mean(net: Network, path: str | None) -> float | None:
    return None if path is None else float(net.tensor(path).detach().float().mean())


def _upstream(net: Network, name: str, flags: dict[str, str]) -> str | None:
    """The first flagged population (plan order) that feeds `name`, directly or not, outside its own loop."""
    if net.graph is None:
        return None
    ancestors = _ancestors(net, [src for src, _ in net.graph.in_edges(name)])
    return next((s for s in flags if s != name and s in ancestors and name not in _ancestors(net, [s])), None)


def _input_cause(net: Network, pop: Population, flags: dict[str, str]) -> str:
    """A silent or saturated layer that feeds this one is the cause to fix first."""
    up = _upstream(net, pop.name, flags)
    return f"Likely cause: '{up}', upstream of it, is {flags[up]} too; fix that layer first." if up else ""


def _ancestors(net: Network, sources: list[str]) -> set[str]:
    seen, todo = set(), list(sources)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo += [src for src, _ in net.graph.in_edges(node)]
    return seen


def _cause(net: Network, pop: Population, rec, kind: str, flags: dict[str, str]) -> str:
    upstream = _input_cause(net, pop, flags)
    if upstream:
        return upstream
    step = _integrate_step(net, pop.name)
    g_E = _mean(net, step.params.g_E) if step is not None else None
    b_E = _mean(net, step.params.b_E) if step is not None else None
    now = ", ".join(f"{k} = {v if abs(v) > 1e-6 else 0:.3g}" for k, v in (("g_E", g_E), ("b_E", b_E))
                    if v is not None)
    now = f" (now {now})" if now else ""
    inhibition = [e for _, e in net.graph.in_edges(pop.name, ir.Inhibition)] if net.graph is not None else []
    if kind == "saturated":
        gain_rule = rec.gain.rule if rec is not None and rec.gain is not None else None
        if inhibition and all(e.divisive and not e.subtractive for e in inhibition) and gain_rule != "gain_control":
            return (f"Likely cause: it is inhibited only divisively and its gain is fixed{now}: nothing is "
                    "subtracted, so I_int = g_E·I_EE/I_div + b_E stays near 1/g_I, above the threshold, whatever "
                    "the input. Fix: let E-I Init set g_E and put the layer just below threshold, "
                    f"`{DIVISIVE_FIX}` (specs/motifs/divisive.ei)")
        if not inhibition:
            return (f"Likely cause: nothing inhibits it, so nothing balances its excitation{now}. Fix: add "
                    "interneurons (`inh I = relu(...)`, `I -| E : inhibit(...)`) or a negative bias")
        return (f"Likely cause: its excitation outweighs its inhibition{now}. Fix: lower its bias (b_E) or gain "
                "(g_E), strengthen the inhibition (the W_EI init), or lower --lr if it saturated during training")
    return (f"Likely cause: its current never reaches the threshold{now}, so the layers after it get no input and "
            "no gradient flows through it. Fix: raise its bias (b_E) or gain (g_E), weaken its inhibition (the W_EI "
            "init), use E-I Init (`init = ei_balanced`) on its inputs, or lower --lr if it fell silent during "
            "training")


def _nonfinite_message(bad: probe.NonFinite, epoch: int) -> str:
    if bad.current == "I_div":
        fix = ("the divisive inhibition overflowed or divided by zero: keep `stabilize = min_positive` (the "
               "default) or use `stabilize = epsilon` with a larger epsilon, and lower --lr")
    elif bad.layer == "input":
        fix = "the data hold inf or NaN: check the dataset"
    else:
        fix = "weights grew without bound: lower --lr, lengthen the warm-up, or set grad_clip"
    return (f"a non-finite value at the end of epoch {epoch}: the first is {bad}, although the loss stayed "
            f"finite. Likely cause and fix: {fix}")
