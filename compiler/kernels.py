"""Compiled elementwise kernels of an E-I layer, for the eager network.

In eager PyTorch every elementwise op is one pass over memory, and an E-I layer has
many: the integration, the min-positive divisor, the LIF's T steps, each again in the
backward. On a CPU these passes, not the convolutions' arithmetic, decide the cost of
the circuit. The bodies below are plain functional formulas; inductor turns each into
one or two fused loops over memory.

On a CPU each body is exported once per signature (tensor ranks, dtypes, which sizes are
0 or 1, the integer/bool/string arguments' values), with every other size dynamic and
every float argument a run-time input, and compiled ahead of time into a shared library
(AOTInductor) kept in `<inductor cache>/eidsl-kernels/`. A later process loads it in
milliseconds: `torch.compile` would trace every body again in every process (~0.7-2 s
each, seconds before the first batch). The file's name hashes what decides the code:
the body's module source and closure, the signature, torch's version and the CPU's
instruction set, so an edited body or another machine never loads a stale library.
On other devices the bodies go through `torch.compile` (dynamic sizes), as before.

The hand-written Functions of fused.py call them when `active()`; otherwise (no C
compiler, `EIDSL_KERNELS=eager`, `use_kernels(False)`) they run their own in-place eager
code. Values agree with it to float rounding (tests/compiler/test_kernels.py).
"""
from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import inspect
import logging
import marshal
import math
import os
import re
import tempfile
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


def _say_cold() -> None:
    global _NOTICE
    if _NOTICE is not None:
        notice, _NOTICE = _NOTICE, None
        notice()


# Devices whose kernels are compiled ahead of time; the others' go through torch.compile.
AHEAD_OF_TIME = ("cpu",)


def cache_folder() -> str:
    """Where the compiled kernels live: in inductor's cache folder, so clearing it clears them too.
    Inductor's rule, restated: importing its module imports dynamo (1.2 s), which a warm run never needs
    (tests/compiler/test_kernels.py checks the two agree)."""
    root = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if root is None:
        try:
            user = getpass.getuser()
        except (KeyError, ModuleNotFoundError, OSError):
            user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
        root = os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))
    return os.path.join(os.path.abspath(root), "eidsl-kernels")


def _compile_failures() -> tuple[type[BaseException], ...]:
    from torch._dynamo.exc import BackendCompilerFailed, TorchRuntimeError, Unsupported, UserError
    from torch._inductor.exc import CppCompileError, InductorError
    return (BackendCompilerFailed, CppCompileError, InductorError, OSError, RuntimeError, TorchRuntimeError,
            Unsupported, UserError)


def _layout(t: torch.Tensor) -> str:
    """The layout a library is compiled for: channels-last stays channels-last (the outputs follow it);
    any other strided tensor is copied to contiguous first."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "contiguous"


def _signature(args) -> tuple:
    """What a compiled library specialises on: each tensor's rank, dtype, device, layout and which
    sizes are 0 or 1; every non-float argument's value. Floats are run-time inputs (as dynamo
    treats them), so a sweep over tau or theta reuses one library."""
    return tuple(
        (a.dim(), a.dtype, a.device, _layout(a), tuple(n < 2 for n in a.shape))
        if isinstance(a, torch.Tensor) else float if isinstance(a, float) else a for a in args)


@functools.cache
def _source_digest(filename: str) -> str:
    with open(filename, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _library_path(body, signature) -> str:
    """The library's file: a hash of everything that decides its code. The body's module text stands
    for the body and the helpers it calls (every kernel keeps its helpers in its own module)."""
    cells = tuple(c.cell_contents for c in body.__closure__ or ())
    source = inspect.getsourcefile(body)        # None without sources (a zipped install): the bytecode then
    code = _source_digest(source) if source else hashlib.sha256(marshal.dumps(body.__code__)).hexdigest()
    key = repr((torch.__version__, torch.backends.cpu.get_cpu_capability(), body.__module__, body.__qualname__,
                code, cells, signature))
    return os.path.join(cache_folder(), hashlib.sha256(key.encode()).hexdigest()[:32] + ".pt2")


def _inputs(args) -> list[torch.Tensor]:
    """The library's inputs: the tensors in the layout they were exported in (the compiled code
    computes every stride from the sizes and that layout) and each float as a 0-d float64 tensor,
    which rounds into the arithmetic as the Python float does."""
    return [(a if _layout(a) == "channels_last" else a.contiguous()) if isinstance(a, torch.Tensor)
            else torch.tensor(a, dtype=torch.float64) for a in args if isinstance(a, (torch.Tensor, float))]


def _build(body, args, path: str) -> None:
    """Export `body` for `args`' signature (sizes dynamic) and compile it ahead of time into `path`."""
    tensors = _inputs(args)

    class Body(torch.nn.Module):
        def forward(self, *inputs):
            given = iter(inputs)
            return body(*(next(given) if isinstance(a, (torch.Tensor, float)) else a for a in args))

    auto = torch.export.Dim.AUTO
    shapes = (tuple({d: auto for d in range(t.dim())} for t in tensors),)
    # No duck sizing: a layer whose channel count equals its batch must not make the two one size.
    with torch.fx.experimental._config.patch(use_duck_shape=False):
        program = torch.export.export(Body(), tuple(tensors), dynamic_shapes=shapes)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".pt2", dir=os.path.dirname(path))
    os.close(fd)
    # Dynamic threads: inductor decides whether a loop runs in parallel from the sizes it is
    # compiled for; this way every loop nest gets a parallel region and OpenMP sizes it at run time
    # (an entry compiled for a test's tiny tensors once ran VGG-8's layers on one thread).
    try:
        with torch._inductor.config.patch({"cpp.dynamic_threads": True}):
            torch._inductor.aoti_compile_and_package(program, package_path=partial)
        os.replace(partial, path)        # atomic: a process beside this one never loads half a file
    finally:
        with contextlib.suppress(OSError):
            os.remove(partial)


class UntrustedCache(OSError):
    """The kernels' folder or a library in it could have been written by another user."""


def _check_owner(path: str) -> None:
    """Loading a library runs its code, and the folder sits in the shared temp folder by default: refuse
    a folder or file that another user owns or may write (another user could have created the folder
    first and planted a library)."""
    if not hasattr(os, "getuid"):
        return
    for p in (os.path.dirname(path), path):
        st = os.stat(p)
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise UntrustedCache(f"{p} is owned by uid {st.st_uid} or writable by others; remove it or set "
                                 "TORCHINDUCTOR_CACHE_DIR to a folder of your own")


def _load(path: str):
    """The library at `path` as a function of `_inputs(args)`, returning what the body returns."""
    from torch.utils._pytree import tree_unflatten, treespec_loads
    _check_owner(path)
    runner = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1)
    returns = treespec_loads(runner.get_call_spec()[1])
    return lambda inputs: tree_unflatten(runner.run(inputs), returns)


def kernel(body):
    """`body`, compiled on first use; if compiling fails, kernels are switched off (once, with a
    warning) and the callers fall back to their eager code from then on."""
    libraries = {}          # signature -> the loaded library's run
    compiled = None         # torch.compile of body, off the CPU,
    served = set()          # and the signatures it has compiled entries for

    def fail(error, args):
        global _ACTIVE
        _ACTIVE = False
        warnings.warn(f"eidsl: compiled kernels unavailable ({type(error).__name__}: {str(error)[:200]}); "
                      "using the eager path (set EIDSL_KERNELS=eager to skip the attempt)",
                      RuntimeWarning, stacklevel=3)
        return body(*args)

    @functools.wraps(body)
    def run(*args):
        nonlocal compiled
        if _get_current_dispatch_mode() is not None:
            return body(*args)          # under a user's dispatch mode (FlopCounterMode, ...) the formulas run as they are
        # The kernels run detached and below autograd: their callers, autograd Functions and custom
        # ops, own the gradients.
        detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        device = next(a.device for a in detached if isinstance(a, torch.Tensor))
        signature = _signature(detached)
        if device.type not in AHEAD_OF_TIME:
            if compiled is None:
                compiled = torch.compile(body, dynamic=True, fullgraph=True)
            if signature in served:     # entering the settings below costs ~100 us, as much as a small layer's kernel
                with torch._C._AutoDispatchBelowADInplaceOrView():
                    return compiled(*detached)
            # No duck sizing: a layer whose channel count equals its batch must not get its own entry.
            with torch.fx.experimental._config.patch(use_duck_shape=False), \
                    torch._dynamo.config.patch(recompile_limit=64, accumulated_recompile_limit=4096), \
                    torch._C._AutoDispatchBelowADInplaceOrView():
                try:
                    out = compiled(*detached)
                except _compile_failures() as error:
                    return fail(error, args)
            served.add(signature)
            return out
        library = libraries.get(signature)
        if library is None:
            path = _library_path(body, signature)
            try:
                try:
                    library = _load(path) if os.path.exists(path) else None
                except RuntimeError:
                    library = None              # unreadable (a damaged file): built again below
                if library is None:
                    _say_cold()
                    # Inductor's C++ toolchain probe warns about CUDA_HOME on CPU-only machines: not news.
                    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
                    with torch._C._DisableAutocast():
                        _build(body, detached, path)
                    library = _load(path)
                libraries[signature] = library
            except _compile_failures() as error:
                return fail(error, args)
        with torch._C._AutoDispatchBelowADInplaceOrView():
            return library(_inputs(detached))
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
    return _integrated(a, min_positive(P_div), g_E, b_E), a


def _integrated(a, D, g_E, b_E):
    """I_int = g_E a / D + b_E, in one order of operations: the backward recomputes it bit for bit."""
    return a * channels(g_E, a) / D + channels(b_E, a)


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
        v = _after_spike(h, s, theta, soft, v_reset)
        hs.append(h)
        spikes.append(s)
    return torch.stack(spikes).flatten(0, 1), torch.stack(hs).flatten(0, 1)


def _after_spike(h, s, theta, soft: bool, v_reset):
    """The membrane after step t: soft reset subtracts theta per spike, hard reset sets v_reset."""
    return h - theta * s if soft else torch.where(h >= theta, v_reset, h)


def _reset_grad(h, sg, theta, soft: bool, v_reset, detach_reset: bool):
    """dv_t/dh_t through the reset (sg = s'(h_t)); 1.0 where the reset is detached from a soft LIF."""
    if soft:                                           # v = h - theta s(h)
        return 1.0 if detach_reset else 1 - theta * sg
    dvdh = (h < theta).to(h.dtype)                     # v = s v_reset + (1 - s) h
    return dvdh if detach_reset else dvdh + (v_reset - h) * sg


@kernel
def lif_backward(grad, h, T: int, decay: float, theta: float, soft: bool, v_reset: float,
                 detach_reset: bool, surrogate: str, alpha: float):
    """dL/d current: g_t = dL/ds_t s'(h_t) + decay g_{t+1} dv_t/dh_t, from the last step back."""
    sg = surrogate_grad(h - theta, surrogate, alpha)
    direct = (sg * grad).view(T, grad.shape[0] // T, *grad.shape[1:])
    sgs, hs = sg.view_as(direct), h.view_as(direct)
    out = [direct[T - 1]]
    for t in range(T - 2, -1, -1):
        out.append(direct[t] + decay * out[-1] * _reset_grad(hs[t], sgs[t], theta, soft, v_reset, detach_reset))
    return torch.stack(out[::-1]).flatten(0, 1)


# ---------------------------------------------------------------- the layer's forward: circuit, then LIF, in one pass


@kernel
def circuit_lif_forward(I_EE, P_sub, P_div, g_E, b_E, T: int, decay: float, theta: float, soft: bool,
                        v_reset: float):
    """Spikes of the E population and a = I_EE - I_sub, which with s_I is all the backward keeps:
    (spikes, a). The membrane is recomputed there (circuit_lif_backward), by the same formulas."""
    I_int, a = circuit_forward.body(I_EE, P_sub, P_div, g_E, b_E)
    spikes, _ = lif_forward.body(I_int, T, decay, theta, soft, v_reset)
    return spikes, a


@kernel
def circuit_lif_backward(grad, a, P_div, g_E, b_E, T: int, decay: float, theta: float, soft: bool,
                         v_reset: float, detach_reset: bool, surrogate: str, alpha: float):
    """dL/dI_EE, dL/dI_div, dL/dg_E, dL/db_E from dL/d spikes. The integrated current and the membrane
    are recomputed from a and the divisor in the same pass (the forward's formulas, so the same bits),
    so no E-sized membrane is stored between the passes.

    Written step by step, each output step assembled by one cat, not as lif_forward's and
    lif_backward's stacked bodies: stacking made inductor keep four E-sized temporaries beside
    the two outputs (VGG-8's layer-1 backward peaked 48 MB higher); this way one."""
    D = min_positive(P_div)
    a_t, D_t, grad_t = (x.view(T, x.shape[0] // T, *x.shape[1:]) for x in (a, D, grad))
    hs, v = [], None
    for t in range(T):                                  # lif_forward's recurrence, on the recomputed current
        h = _integrated(a_t[t], D_t[t], g_E, b_E)
        if v is not None:
            h = h + decay * v
        v = _after_spike(h, (h >= theta).to(h.dtype), theta, soft, v_reset)
        hs.append(h)
    grad_int, later = [None] * T, None
    for t in range(T - 1, -1, -1):                      # lif_backward's, from the last step back
        sg = surrogate_grad(hs[t] - theta, surrogate, alpha)
        g_t = sg * grad_t[t]
        if later is not None:
            g_t = g_t + decay * later * _reset_grad(hs[t], sg, theta, soft, v_reset, detach_reset)
        grad_int[t] = later = g_t
    steps = [_integration_grads(grad_int[t], a_t[t], D_t[t], g_E) for t in range(T)]
    return (torch.cat([s[0] for s in steps]), torch.cat([s[1] for s in steps]),
            sum(s[2] for s in steps), sum(s[3] for s in steps))
