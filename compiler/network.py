"""The runtime: an nn.Module that owns the parameters and interprets a plan.

Parameters live in a tree of modules that mirrors the spec's hierarchy, so a
state dict reads ``layer_1.ei_layer_1.E.W_EE``. State is explicit: every forward
starts its membrane potentials at zero, so consecutive calls never leak.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from eidsl import ir
from eidsl.errors import EidslError

from eidsl_compiler import dale, ops
from eidsl_compiler.plan import Plan, Step, fusible_circuits, standard_circuit, static_input, walk

# Steps that compute a population's output from its integrated current.
POPULATION_OPS = ("lif", "lif_step", "relu", "identity")


class InputError(EidslError):
    pass


class HookError(EidslError):
    """A module hook that eidsl's runtime could never call."""


class Scope(nn.Module):
    """A node of the parameter tree (a motif instance or a population).

    The network never calls these modules, it interprets its plan; a forward hook on a
    population's module is called by the runtime instead, with that population's
    integrated current as the input and its output (spikes, s_I or current) as the output.
    """

    population: str | None = None   # the IR node, for a population's module

    def register_forward_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False):
        if self.population is None:
            raise HookError(f"'{self.path}' is a motif instance, not a population, so nothing runs as this module: "
                            f"register the hook on one of its populations ({self.children_list()}), or read every "
                            "tensor of a forward with net.run(x, keep=True) (docs/training.md, 'Looking inside')")
        return super().register_forward_hook(hook, prepend=prepend, with_kwargs=with_kwargs,
                                             always_call=always_call)

    def register_forward_pre_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False):
        raise HookError(f"forward pre-hooks on '{self.path}' are not supported: a population's input is its "
                        "integrated current, which a forward hook (register_forward_hook) receives as inputs[0]; "
                        "every tensor of a forward is in net.run(x, keep=True)")

    @property
    def path(self) -> str:
        return getattr(self, "_eidsl_path", "?")

    def children_list(self) -> str:
        pops = [f"{self.path}.{n}" for n, m in self.named_children() if getattr(m, "population", None)]
        return ", ".join(pops) or "none directly"


class Network(nn.Module):
    def __init__(self, plan: Plan, graph: ir.Graph | None = None):
        super().__init__()
        self.plan = plan
        self.graph = graph
        self.T = plan.T
        self.encoding = plan.input.encoding
        self.param_specs = {p.path: p for p in plan.params}
        for spec in plan.params:
            scope, name = self._scope(spec.path)
            scope.register_parameter(name, nn.Parameter(torch.empty(spec.shape)))
        for spec in plan.buffers:
            scope, name = self._scope(spec.path)
            bn = nn.BatchNorm2d(spec.shape[0]) if self._spatial(spec.node) else nn.BatchNorm1d(spec.shape[0])
            scope.add_module(name, bn)
        self.fused_lif = fusible_circuits(plan)
        self.static_input = static_input(plan)
        populations: dict[str, Scope] = {}
        for step in walk(plan.steps):
            if step.op in POPULATION_OPS:
                scope, _ = self._scope(f"{step.node}._")
                scope.population = step.node
                populations[step.node] = scope
        self._population_scopes = populations
        for name, module in self.named_modules():
            if isinstance(module, Scope):
                module._eidsl_path = name
        self.dale_guard = dale.Guard(self)
        dale.track(self)

    def _spatial(self, node: str) -> bool:
        return any(s.attrs.spatial for s in walk(self.plan.steps) if s.node == node and s.op == "integrate")

    def _scope(self, path: str) -> tuple[nn.Module, str]:
        *parts, name = path.split(".")
        module: nn.Module = self
        for part in parts:
            child = module._modules.get(part)
            if child is None:
                child = Scope()
                module.add_module(part, child)
            module = child
        return module, name

    def tensor(self, path: str):
        module, name = self._scope(path)
        return getattr(module, name)

    def value(self, path: str) -> torch.Tensor:
        """The parameter as the circuit uses it: its declared gradient factor applied in the
        backward (identity forward), then its transform (g_I = exp(alpha))."""
        t, spec = self.tensor(path), self.param_specs.get(path)
        if spec is None:
            return t
        if spec.grad_scale != 1.0:
            t = ops.scale_grad(t, spec.grad_scale)
        if spec.transform == "exp":
            t = torch.exp(t)
        return t

    # running
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.plan.output]

    def run(self, x: torch.Tensor, hook: Callable | None = None, keep: bool = False) -> dict[str, torch.Tensor]:
        """Execute the plan. `hook(step, env)` runs before each step (E-I Init uses it);
        with `keep`, every intermediate tensor is returned (for statistics and diagnostics)."""
        want = self.plan.input.shape
        if len(want) == 1 and self.encoding == "static" and x.dim() > 2 and x[0].numel() == want[0]:
            x = x.flatten(1)   # a flat input takes (C, H, W) images of the same size, C-major as torch flattens
        self.check_input(x)
        if not torch.compiler.is_compiling():
            dale.watch(self)
        hooked = {name: scope for name, scope in self._population_scopes.items() if scope._forward_hooks}
        env = {"input": x}
        # Without `keep`, a tensor leaves env after its last reader, so intermediates the
        # backward does not need (conv outputs, integrated currents) die during the forward.
        last = {} if keep else {name: i for i, step in enumerate(self.plan.steps) for name in step.ins}
        # A circuit and the LIF it feeds run as one op unless someone wants to see the current between them.
        fuse = self.fused_lif if hook is None and not keep else set()
        if hooked:
            fuse = {i for i in fuse if self.plan.steps[i + 1].node not in hooked}
        # A static image's projections run once per sample (ops.project_static); `raw` holds the image
        # (and its flattening) before the repeat. E-I Init (hook) and `keep` see the plain plan, so the
        # statistics E-I Init measures are those of the T copies, as before.
        static = self.static_input if hook is None and not keep else {}
        raw: dict[str, torch.Tensor] = {}
        steps, i = self.plan.steps, 0
        while i < len(steps):
            step = steps[i]
            if hook is not None:
                hook(step, env)
            if step.op in ("repeat_static", "flatten") and step.outs[0] in static:
                out = step.outs[0]
                raw[out] = x if step.op == "repeat_static" else ops.flatten(raw[step.ins[0]])
                if static[out]:
                    env[out] = ops.repeat_static(raw[out], self.T)
            elif step.op == "project" and step.ins[0] in raw:
                env.update(zip(step.outs, _run_project(self, step, [raw[step.ins[0]]], step_T=self.T)))
            elif step.op == "loop" and (keep or any(m in hooked for m in step.outs)):
                env.update(run_loop(self, step, [env[n] for n in step.ins], keep=True))
                for member in step.outs:
                    if member in hooked and _call_hooks(hooked[member], env, f"{member}:I_int", member) is not None:
                        raise HookError(f"a forward hook on '{member}' returned a tensor: inside a recurrent loop a "
                                        "population runs step by step, so its output cannot be replaced afterwards "
                                        "(return None to observe it)")
            elif i in fuse:
                lif = steps[i + 1]
                env.update(zip(lif.outs, _run_circuit_lif(self, step, lif, [env[n] for n in step.ins])))
            else:
                env.update(zip(step.outs, RUNNERS[step.op](self, step, [env[n] for n in step.ins])))
                if step.node in hooked and step.op in POPULATION_OPS:
                    replaced = _call_hooks(hooked[step.node], env, step.ins[0], step.outs[0])
                    if replaced is not None:
                        env[step.outs[0]] = replaced
            for name in step.ins:
                if last.get(name) == i and name != self.plan.output:
                    env.pop(name, None)
            i += 2 if i in fuse else 1
        return env if keep else {self.plan.output: env[self.plan.output]}

    def check_input(self, x: torch.Tensor) -> None:
        """A batch of the wrong shape is a user error, reported as such rather than deep inside a matmul."""
        want = tuple(self.plan.input.shape)
        if self.encoding == "events":
            ok, form = x.dim() == len(want) + 2 and x.shape[1] == self.T and tuple(x.shape[2:]) == want, \
                f"(B, T={self.T}, {', '.join(map(str, want))})"
        else:
            ok, form = x.dim() == len(want) + 1 and tuple(x.shape[1:]) == want, f"(B, {', '.join(map(str, want))})"
        if not ok:
            raise InputError(f"the network '{self.plan.name}' takes batches of shape {form}, "
                             f"got {tuple(x.shape)}")

    def clamp_(self) -> None:
        """Project every sign-constrained parameter onto >= 0 (Dale's law, positive gains)."""
        with torch.no_grad():
            for path, spec in self.param_specs.items():
                if spec.nonneg:
                    self.tensor(path).clamp_(min=0)


def _call_hooks(scope: Scope, env, current: str, output: str):
    """torch's forward-hook protocol for a population: (module, (I_int,), output) -> None or a new output."""
    args, out, replaced = (env[current],), env[output], None
    for key, hook in list(scope._forward_hooks.items()):
        result = hook(scope, args, {}, out) if key in scope._forward_hooks_with_kwargs else hook(scope, args, out)
        if result is not None:
            out = replaced = result
    return replaced


# ---------------------------------------------------------------- step runners


def _param(net: Network, path):
    return None if path is None else net.value(path)


def _run_project(net: Network, step: Step, ins, step_T: int = 0):
    weights = [net.value(p) for p in step.params.weights]
    biases = [_param(net, p) for p in step.params.biases]
    if step_T:   # ins[0] is the static image itself, (B, ...)
        return ops.project_static(ins[0], step_T, weights, biases, step.attrs.op, step.attrs.stride,
                                  step.attrs.padding)
    return ops.project(ins[0], weights, biases, step.attrs.op, step.attrs.stride, step.attrs.padding)


def _run_integrate(net: Network, step: Step, ins):
    n_exc, p = step.attrs.n_exc, step.params
    excitation, inhibitors = ins[:n_exc], ins[n_exc:]
    I_EE = ops.spike_sum(*excitation) if excitation else None
    if p.bn is not None:
        I_EE = net.tensor(p.bn)(I_EE)
    if I_EE is not None and standard_circuit(step):
        return [ops.ei_circuit(I_EE, inhibitors[0], _standard_W_EI(net, step), net.value(p.g_I[0]),
                               net.value(p.g_E), net.value(p.b_E))]
    I_sub, I_div, rule = ops.inhibition(inhibitors, [[net.value(w) for w in paths] for paths in p.W_EI],
                                        [_param(net, g) for g in p.g_I], step.attrs.modes)
    return [ops.integrate_terms(I_EE, I_sub, I_div, rule, _param(net, p.g_E), _param(net, p.b_E),
                                step.attrs.balanced_only)]


def _standard_W_EI(net: Network, step: Step) -> torch.Tensor:
    """A standard circuit's W_EI, with E-I Prop's gradient scale applied."""
    (w_path,) = step.params.W_EI[0]
    return net.value(w_path)


def _run_circuit_lif(net: Network, circuit: Step, lif: Step, ins):
    n_exc, a = circuit.attrs.n_exc, lif.attrs
    return [ops.ei_circuit_lif(ops.spike_sum(*ins[:n_exc]), ins[n_exc], _standard_W_EI(net, circuit),
                               net.value(circuit.params.g_I[0]),
                               net.value(circuit.params.g_E), net.value(circuit.params.b_E), a.T,
                               a.tau, a.theta, a.reset, a.v_reset, a.detach_reset, a.surrogate,
                               a.alpha)]


def _run_lif(net: Network, step: Step, ins):
    a = step.attrs
    return [ops.lif(ins[0], a.T, a.tau, a.theta, a.reset, a.v_reset, a.detach_reset,
                    a.surrogate, a.alpha)]


def run_loop(net: Network, step: Step, ins, keep: bool = False) -> dict[str, torch.Tensor]:
    """Run a loop's body once per time step. Inputs arrive over the whole sequence (T*B, ...);
    the body sees one step (B, ...); delayed values come from earlier steps (zero before the
    first) and each LIF keeps its membrane between steps. Returns the members' outputs over
    the whole sequence, or with `keep` every tensor of the body."""
    T = step.attrs.T
    seqs = [ops.unfold_time(x, T) for x in ins]
    batch = seqs[0].shape[1]
    history: dict[str, list[torch.Tensor]] = {name: [] for name in step.attrs.history}
    membrane: dict[str, torch.Tensor] = {}
    body = step.attrs.body
    wanted = [o for s in body for o in s.outs] if keep else list(step.outs)
    traces: dict[str, list[torch.Tensor]] = {name: [] for name in wanted}
    for t in range(T):
        env = {name: seq[t] for name, seq in zip(step.ins, seqs)}
        for inner in body:
            if inner.op == "delay_step":
                k = inner.attrs.steps
                outs = [history[inner.ins[0]][t - k] if t >= k else
                        seqs[0].new_zeros((batch, *inner.attrs.shape))]
            elif inner.op == "lif_step":
                a, current = inner.attrs, env[inner.ins[0]]
                v = membrane.get(inner.outs[0])
                v, s = ops.lif_step(torch.zeros_like(current) if v is None else v, current, a.tau, a.theta,
                                    a.reset, a.v_reset, a.detach_reset, a.surrogate, a.alpha)
                membrane[inner.outs[0]], outs = v, [s]
            else:
                outs = RUNNERS[inner.op](net, inner, [env[i] for i in inner.ins])
            env.update(zip(inner.outs, outs))
        for name, values in history.items():
            values.append(env[name])
        for name, values in traces.items():
            values.append(env[name])
    return {name: ops.fold_time(torch.stack(values)) for name, values in traces.items()}


RUNNERS: dict[str, Callable] = {
    "repeat_static": lambda net, step, ins: [ops.repeat_static(ins[0], step.attrs.T)],
    "fold_events": lambda net, step, ins: [ops.fold_events(ins[0])],
    "project": _run_project,
    "integrate": _run_integrate,
    "lif": _run_lif,
    "relu": lambda net, step, ins: [ops.relu(ins[0])],
    "identity": lambda net, step, ins: [ins[0]],
    "delay": lambda net, step, ins: [ops.delay(ins[0], step.attrs.T, step.attrs.steps)],
    "avgpool": lambda net, step, ins: [ops.avgpool(ins[0], step.attrs.kernel, step.attrs.stride)],
    "maxpool": lambda net, step, ins: [ops.maxpool(ins[0], step.attrs.kernel, step.attrs.stride)],
    "global_avgpool": lambda net, step, ins: [ops.global_avgpool(ins[0])],
    "flatten": lambda net, step, ins: [ops.flatten(ins[0])],
    "spike_sum": lambda net, step, ins: [ops.spike_sum(*ins)],
    "readout_mean": lambda net, step, ins: [ops.readout_mean(ins[0], step.attrs.T)],
    "loop": lambda net, step, ins: [run_loop(net, step, ins)[name] for name in step.outs],
}
