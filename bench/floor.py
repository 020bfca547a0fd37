"""The "convolutions only" floor of an E-I network: its own conv/linear layers, E->I outputs
included (n_E + n_I output channels, one fused product), with a ReLU in place of the E-I
circuit and the LIF, at batch T*B. It is what the network would cost if the circuit were free.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eidsl_compiler.network import RUNNERS, Network


class Floor(nn.Module):
    def __init__(self, net: Network):
        super().__init__()
        self.plan = net.plan
        self.fused = nn.ParameterList()
        self.bias = nn.ParameterList()
        self.slot: dict[int, int] = {}
        for i, step in enumerate(self.plan.steps):
            if step.op != "project":
                continue
            weights = [net.tensor(p).detach() for p in step.params.weights]
            self.slot[i] = len(self.fused)
            fused = torch.empty_like(torch.cat(weights, 0))
            # He init keeps ReLU activations at scale through depth: no overflow, no denormals.
            nn.init.kaiming_normal_(fused, nonlinearity="relu")
            self.fused.append(nn.Parameter(fused))
            has_bias = any(p is not None for p in step.params.biases)
            self.bias.append(nn.Parameter(fused.new_zeros(fused.shape[0]), requires_grad=has_bias))
        self.sizes = {i: [net.tensor(p).shape[0] for p in self.plan.steps[i].params.weights]
                      for i in self.slot}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {"input": x}
        for i, step in enumerate(self.plan.steps):
            ins = [env[n] for n in step.ins]
            if step.op == "project":
                outs = self._project(i, step, ins[0])
            elif step.op == "integrate":
                excitation = ins[:step.attrs.n_exc]
                current = excitation[0]
                for extra in excitation[1:]:
                    current = current + extra
                outs = [current if step.attrs.balanced_only else torch.relu(current)]
            elif step.op in ("lif", "relu", "identity"):
                outs = [ins[0]]
            else:
                outs = RUNNERS[step.op](None, step, ins)
            env.update(zip(step.outs, outs))
        return env[self.plan.output]

    def _project(self, i: int, step, x: torch.Tensor) -> list[torch.Tensor]:
        k = self.slot[i]
        w, b = self.fused[k], self.bias[k]
        b = b if b.requires_grad else None
        if step.attrs.op == "dense":
            out, dim = F.linear(x, w, b), -1
        else:
            out, dim = F.conv2d(x, w, b, stride=step.attrs.stride, padding=step.attrs.padding), 1
        return list(out.split(self.sizes[i], dim=dim))
