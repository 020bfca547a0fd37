"""Compiled elementwise kernels of an E-I layer, for the eager network.

In eager PyTorch every elementwise op is one pass over memory, and an E-I layer has
many: the integration, the min-positive divisor, the LIF's T steps, each again in the
backward. On a CPU these passes, not the convolutions' arithmetic, decide the cost of
the circuit. The bodies below are plain functional formulas; torch.compile (inductor)
turns each into one or two fused loops over memory. They are compiled once per tensor
rank, dtype and device, with dynamic sizes, so every layer of a network shares them
(a few seconds the first time, then cached on disk by inductor).

The hand-written Functions of fused.py call them when `active()`; otherwise (no C
compiler, `EIDSL_KERNELS=eager`, `use_kernels(False)`) they run their own in-place eager
code. Values agree with it to float rounding (tests/compiler/test_kernels.py).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import warnings

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

_ACTIVE = os.environ.get("EIDSL_KERNELS", "compiled").lower() != "eager"


def active() -> bool:
    return _ACTIVE


@contextlib.contextmanager
def use_kernels(enabled: bool):
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, enabled
    try:
        yield
    finally:
        _ACTIVE = previous


# Said once per process before the first kernel compiles with nothing in the cache (the trainer prints
# "compiling kernels (once)…"), so a cold start is not a silent, frozen progress bar.
_NOTICE = None


def on_cold_compile(notice) -> None:
    """Call `notice()` (once) before the first kernel that this machine's cache does not hold yet."""
    global _NOTICE
    _NOTICE = notice


def _marker(body, signature) -> str:
    """A file beside inductor's cache saying that `body` was compiled for `signature`: inductor's own
    cache keys are not public, and clearing its folder clears these too."""
    import hashlib

    from torch._inductor.runtime.cache_dir_utils import cache_dir
    key = hashlib.sha256(repr((torch.__version__, body.__qualname__, signature)).encode()).hexdigest()[:24]
    return os.path.join(cache_dir(), "eidsl-kernels", key)


def _compile_failures() -> tuple[type[BaseException], ...]:
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import CppCompileError, InductorError
    return BackendCompilerFailed, CppCompileError, InductorError, OSError


try:   # (private, hence guarded: without it every call takes the slow path)
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list as _cache_entries
except ImportError:
    _cache_entries = None


def _has_compiled_entries(body) -> bool:
    """False once torch._dynamo.reset() has dropped `body`'s compiled code."""
    return _cache_entries is not None and len(_cache_entries(body.__code__)) > 0


def _signature(args) -> tuple:
    """What the kernels' compiled entries specialise on: torch's thread count (a global dynamo guards
    on), each tensor's rank, dtype, device, contiguity and which sizes are 0 or 1; every other
    argument's value. A call that matches a served signature but fails a finer guard (another stride
    order) is still correct: dynamo then compiles, with its default settings."""
    return (torch.get_num_threads(),) + tuple(
        (a.dim(), a.dtype, a.device, a.is_contiguous(), tuple(n < 2 for n in a.shape))
        if isinstance(a, torch.Tensor) else a for a in args)


def kernel(body):
    """`body`, compiled on first use; if compiling fails, kernels are switched off (once, with a
    warning) and the callers fall back to their eager code from then on."""
    compiled = None
    served = set()          # signatures a compiled entry already serves

    @functools.wraps(body)
    def run(*args):
        global _ACTIVE, _NOTICE
        nonlocal compiled
        if _get_current_dispatch_mode() is not None:
            return body(*args)          # dynamo refuses to run under a user's dispatch mode (FlopCounterMode, ...)
        detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        # The kernels run detached and below autograd (their callers, autograd Functions and custom
        # ops, own the gradients): the tensors then look the same to dynamo's guards from an eager
        # Function, a custom op and its backward, and one compiled entry serves all three.
        signature = _signature(args)
        if signature in served:
            if _has_compiled_entries(body):
                # Dynamo's settings below matter only when it compiles; entering them costs
                # ~100 us, as much as the kernel on a small layer.
                with torch._C._AutoDispatchBelowADInplaceOrView():
                    return compiled(*detached)
            served.clear()              # dynamo was reset: nothing compiled serves anything now
        if compiled is None:
            # Inductor's C++ toolchain probe warns about CUDA_HOME on CPU-only machines: not news to a user.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            compiled = torch.compile(body, dynamic=True, fullgraph=True)
        # No duck sizing: a layer whose channel count equals the batch must not get its own
        # specialisation, so one entry serves every layer.
        # Dynamic threads: inductor decides whether a loop runs in parallel from the sizes of the
        # first call, and its on-disk cache does not key on sizes, so an entry first compiled for
        # tiny tensors (a test, a small layer) ran every later layer on one thread: VGG-8's layer-1
        # circuit backward took 10.8 ms instead of 5.3 with two threads. This way every loop nest
        # gets a parallel region and OpenMP sizes it at run time.
        marker = _marker(body, signature)
        if _NOTICE is not None and not os.path.exists(marker):
            notice, _NOTICE = _NOTICE, None
            notice()
        with torch.fx.experimental._config.patch(use_duck_shape=False), \
                torch._dynamo.config.patch(recompile_limit=64, accumulated_recompile_limit=4096), \
                torch._inductor.config.patch({"cpp.dynamic_threads": True}), \
                torch._C._AutoDispatchBelowADInplaceOrView():
            try:
                out = compiled(*detached)
            except _compile_failures() as error:
                _ACTIVE = False
                warnings.warn(f"eidsl: compiled kernels unavailable ({type(error).__name__}); "
                              "using the eager path (set EIDSL_KERNELS=eager to skip the attempt)",
                              RuntimeWarning, stacklevel=2)
                return body(*args)
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            open(marker, "a").close()
        served.add(signature)
        return out
    run.body = body
    return run


def channels(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-neuron (dense) or per-channel (conv) vector, shaped to broadcast against `like`."""
    return v.view(v.shape[0], *([1] * (like.dim() - 2)))


def _channel_sum(x: torch.Tensor) -> torch.Tensor:
    # Positions first (contiguous, fused into the loop that produces x), then the batch: one
    # reduction over (N, H, W) at once makes inductor recompute x's whole producer per channel.
    return (x.flatten(2).sum(2) if x.dim() > 2 else x).sum(0)


def min_positive(I_div: torch.Tensor) -> torch.Tensor:
    """Exact zeros replaced by the smallest positive entry of the same row (sample and time step)."""
    dims = tuple(range(1, I_div.dim()))
    smallest = torch.where(I_div > 0, I_div, math.inf).amin(dims, keepdim=True)
    return torch.where(I_div == 0, smallest, I_div)


def surrogate_grad(x: torch.Tensor, kind: str, alpha: float) -> torch.Tensor:
    """d spike / d v at x = v - theta, for the Heaviside's smooth stand-in."""
    if kind == "sigmoid":
        s = torch.sigmoid(alpha * x)
        return alpha * s * (1 - s)
    if kind == "atan":
        return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)
    if kind == "triangle":
        return torch.clamp(alpha - alpha * alpha * x.abs(), min=0)
    if kind == "rectangle":
        return (x.abs() < 0.5 / alpha).to(x.dtype) * alpha
    raise ValueError(f"unknown surrogate {kind!r}")


# ---------------------------------------------------------------- the circuit's integration (I->E)


@kernel
def circuit_forward(I_EE, P_sub, P_div, g_E, b_E):
    """a = I_EE - W_EI s_I;  I_int = g_E a / min_positive(W_EI (g_I s_I)) + b_E.  Returns (I_int, a)."""
    a = I_EE - P_sub
    return a * channels(g_E, a) / min_positive(P_div) + channels(b_E, a), a


def _integration_grads(grad, a, D, g_E):
    g = channels(g_E, a)
    r = grad / D
    return r * g, -(a * g / D / D * grad), _channel_sum(r * a), _channel_sum(grad)


@kernel
def circuit_backward(grad, a, P_div, g_E):
    """dL/dI_EE (= -dL/dI_sub), dL/dI_div (through the straight-through divisor), dL/dg_E, dL/db_E."""
    return _integration_grads(grad, a, min_positive(P_div), g_E)


# ---------------------------------------------------------------- multi-step LIF


@kernel
def lif_forward(current, T: int, decay: float, theta: float, soft: bool, v_reset: float):
    """Spikes and the membrane h before each spike, both folded (T*B, ...)."""
    seq = current.view(T, current.shape[0] // T, *current.shape[1:])
    hs, spikes = [], []
    v = None
    for t in range(T):
        h = seq[t] if v is None else seq[t] + decay * v
        s = (h >= theta).to(h.dtype)
        v = h - theta * s if soft else torch.where(h >= theta, v_reset, h)
        hs.append(h)
        spikes.append(s)
    return torch.stack(spikes).flatten(0, 1), torch.stack(hs).flatten(0, 1)


@kernel
def lif_backward(grad, h, T: int, decay: float, theta: float, soft: bool, v_reset: float,
                 detach_reset: bool, surrogate: str, alpha: float):
    """dL/d current: g_t = dL/ds_t s'(h_t) + decay g_{t+1} dv_t/dh_t, from the last step back."""
    sg = surrogate_grad(h - theta, surrogate, alpha)
    direct = (sg * grad).view(T, grad.shape[0] // T, *grad.shape[1:])
    sgs, hs = sg.view_as(direct), h.view_as(direct)
    out = [direct[T - 1]]
    for t in range(T - 2, -1, -1):
        if soft:                                       # v = h - theta s(h)
            dvdh = 1.0 if detach_reset else 1 - theta * sgs[t]
        else:                                          # v = s v_reset + (1 - s) h
            dvdh = (hs[t] < theta).to(h.dtype)
            if not detach_reset:
                dvdh = dvdh + (v_reset - hs[t]) * sgs[t]
        out.append(direct[t] + decay * out[-1] * dvdh)
    return torch.stack(out[::-1]).flatten(0, 1)


# ---------------------------------------------------------------- the layer's forward: circuit, then LIF, in one pass


@kernel
def circuit_lif_forward(I_EE, P_sub, P_div, g_E, b_E, T: int, decay: float, theta: float, soft: bool,
                        v_reset: float):
    """Spikes of the E population, with what the backward needs: (spikes, a, h)."""
    I_int, a = circuit_forward.body(I_EE, P_sub, P_div, g_E, b_E)
    spikes, h = lif_forward.body(I_int, T, decay, theta, soft, v_reset)
    return spikes, a, h
