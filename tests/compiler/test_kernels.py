"""The compiled elementwise kernels (compiler/kernels.py) and the fused circuit+LIF op: the same
values and gradients as the eager Functions, a plan-level choice of what to fuse, and a clean
fallback when no compiler is available."""
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import eidsl
from eidsl_compiler import fused
from eidsl_compiler import kernels
from eidsl_compiler import ops
from eidsl_compiler.plan import fusible_circuits

SPECS = Path(__file__).resolve().parents[2] / "specs"
NEURON = dict(T=2, tau=2.0, theta=1.0, reset="soft", v_reset=0.0, detach_reset=True, surrogate="sigmoid", alpha=4.0)


def _layer_inputs(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n_E, n_I = shape[1], max(shape[1] // 4, 1)
    I_EE = (torch.rand(shape, generator=gen) * 2).requires_grad_()
    s_I = torch.relu(torch.randn((shape[0], n_I, *shape[2:]), generator=gen)).requires_grad_()
    W_EI = torch.rand(n_E, n_I, generator=gen).requires_grad_()
    g_I, g_E, b_E = (torch.rand(n, generator=gen).add(0.5).requires_grad_() for n in (n_I, n_E, n_E))
    return I_EE, s_I, W_EI, g_I, g_E, b_E


def _run(fn, inputs, grad_seed=1):
    out = fn(*inputs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed))
    grads = torch.autograd.grad(out, inputs, g)
    return out.detach(), grads


def _logits_and_grads(net, forward, y):
    """Logits of `forward()` and the gradient of the loss for each of net's parameters, by name."""
    net.zero_grad(set_to_none=True)
    out = forward()
    F.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("shape", [(8, 12), (4, 8, 3, 3)], ids=["dense", "conv"])
def test_compiled_circuit_lif_matches_the_eager_functions(shape):
    inputs = _layer_inputs(shape)
    with torch.no_grad():
        inputs[1][0].zero_()          # a sample-step with no inhibition: min-positive must give +inf, not NaN
    layer = lambda *xs: fused.CircuitLIF.apply(*xs, *NEURON.values())  # noqa: E731
    with kernels.use_kernels(True):
        compiled = _run(layer, inputs)
    with kernels.use_kernels(False):
        eager = _run(layer, inputs)
        separate = _run(lambda *xs: ops.lif(fused.Circuit.apply(*xs), **NEURON), inputs)
    assert torch.equal(compiled[0], eager[0]) and torch.equal(eager[0], separate[0])
    for name, a, b, c in zip(("I_EE", "s_I", "W_EI", "g_I", "g_E", "b_E"), compiled[1], eager[1], separate[1]):
        assert torch.isfinite(a).all(), name
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
        assert torch.equal(b, c), name       # the eager fused op is the two eager ops, bit for bit


@pytest.mark.parametrize("reset,detach,surrogate", [("soft", False, "atan"), ("hard", True, "triangle")])
def test_compiled_lif_matches_the_eager_lif(reset, detach, surrogate):
    current = (torch.rand(6, 5, 4, generator=torch.Generator().manual_seed(2)) * 2).requires_grad_()
    args = (3, 2.0, 1.0, reset, 0.0, detach, surrogate, 2.0)
    results = []
    for on in (True, False):
        with kernels.use_kernels(on):
            results.append(_run(lambda x: fused.LIF.apply(x, *args), (current,)))
    (s_c, (g_c,)), (s_e, (g_e,)) = results
    assert torch.equal(s_c, s_e)
    assert torch.allclose(g_c, g_e, rtol=1e-5, atol=1e-7)


@pytest.fixture(autouse=True)
def _kernels_on():
    # conftest runs the rest of the suite on the eager path; these tests are about the kernels.
    with kernels.use_kernels(True):
        yield


def test_the_network_fuses_each_standard_layer_and_keeps_its_values():
    vgg = eidsl.build(SPECS / "vgg.ei", depth=8, T=2, input=[3, 32, 32])
    assert len(fusible_circuits(vgg.plan)) == 5              # the five E-I conv layers; not the readout
    assert len(fusible_circuits(eidsl.build(SPECS / "mlp.ei", depth=4).plan)) == 3
    assert not fusible_circuits(eidsl.build(SPECS / "mlp.ei", depth=4, family="bn").plan)
    assert not fusible_circuits(eidsl.build(SPECS / "motifs" / "subtractive.ei").plan)

    net = eidsl.build(SPECS / "convnet.ei", T=2)
    x = torch.rand(3, *net.plan.input.shape, generator=torch.Generator().manual_seed(0))
    eidsl.ei_init(net, x)
    y = torch.tensor([1, 2, 3])

    fused_path = _logits_and_grads(net, lambda: net(x), y)
    # A hook asks to see every step, so each circuit and LIF runs on its own.
    separate = _logits_and_grads(net, lambda: net.run(x, hook=lambda step, env: None)[net.plan.output], y)
    with ops.use_fused(False):
        plain = _logits_and_grads(net, lambda: net(x), y)
    assert torch.allclose(fused_path[0], separate[0], rtol=1e-6, atol=1e-6)
    assert torch.allclose(fused_path[0], plain[0], rtol=1e-5, atol=1e-5)
    assert fused_path[1].keys() == separate[1].keys() == plain[1].keys()
    for a, b, c in zip(fused_path[1].values(), separate[1].values(), plain[1].values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-5)


def _fresh_constant() -> float:
    """A constant of this run: a body closing over it has no library in the cache yet."""
    return 1 + time.time_ns() % 1_000_003 / 1e6


def _count_builds(monkeypatch, tmp_path) -> list:
    """Builds from here on, recorded, into a folder of the test's own (fresh constants, fresh files)."""
    monkeypatch.setattr(kernels, "cache_folder", lambda: str(tmp_path))
    built = []
    build = kernels._build
    monkeypatch.setattr(kernels, "_build", lambda body, args, path: (built.append(path), build(body, args, path)))
    return built


def test_a_missing_compiler_falls_back_to_the_eager_path_once(monkeypatch):
    def no_compiler(body, args, path):
        raise OSError("gcc: command not found")

    monkeypatch.setattr(kernels, "_ACTIVE", True)
    monkeypatch.setattr(kernels, "_build", no_compiler)
    offset = _fresh_constant()
    doubled = kernels.kernel(lambda x: x * offset)
    with pytest.warns(RuntimeWarning, match="compiled kernels unavailable"):
        assert torch.equal(doubled(torch.ones(3)), torch.full((3,), offset))
    assert not kernels.active()
    # The Functions now take their own eager code, with the same results.
    current = torch.rand(4, 3, generator=torch.Generator().manual_seed(0)) * 2
    spikes = fused.LIF.apply(current, 2, 2.0, 1.0, "soft", 0.0, True, "sigmoid", 4.0)
    assert torch.equal(spikes, fused.lif_forward(current, 2, 0.5, 1.0, True, 0.0)[0])


def test_one_library_serves_every_size_thread_count_and_float_setting(monkeypatch, tmp_path):
    built = _count_builds(monkeypatch, tmp_path)
    offset = _fresh_constant()

    def scaled_backward(grad, a, P_div, g_E, scale: float):
        return kernels._integration_grads(grad * scale * offset, a, kernels.min_positive(P_div), g_E)

    run = kernels.kernel(scaled_backward)
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    try:
        # first a channel count equal to the batch: the two sizes must stay two symbols
        for i, (n, c) in enumerate(((6, 6), (12, 6), (8, 9), (20, 9), (1000, 300))):
            torch.set_num_threads(1 + i % 2)
            grad, a, P = (torch.rand(n, c, generator=gen) for _ in range(3))
            g_E = torch.rand(c, generator=gen)
            got = run(grad, a, P, g_E, 0.5 + i)
            want = scaled_backward(grad, a, P, g_E, 0.5 + i)
            for x, y in zip(got, want):
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    finally:
        torch.set_num_threads(threads)
    assert len(built) == 1
    # Another rank, or a different integer setting, is another library.
    run(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.rand(3), 1.0)
    assert len(built) == 2


def test_the_library_file_names_what_decides_its_code():
    x = torch.rand(4, 3)
    sig = kernels._signature([x, 2, 0.5])
    assert sig == kernels._signature([torch.rand(9, 7), 2, 0.25])          # sizes and float values: run time
    assert sig != kernels._signature([torch.rand(9, 1), 2, 0.5])           # a size-1 dim is specialised
    assert sig == kernels._signature([x.t(), 2, 0.5])                      # other strides: copied to contiguous
    conv = torch.rand(2, 3, 4, 4)
    assert kernels._signature([conv]) != kernels._signature([conv.contiguous(memory_format=torch.channels_last)])
    assert sig != kernels._signature([x, 3, 0.5])                          # and every integer setting
    a, b = 1.5, 2.5
    first, second = (lambda v: v * a), (lambda v: v * b)
    assert kernels._library_path(first, sig) != kernels._library_path(second, sig)   # a closure's value
    assert kernels._library_path(first, sig) != kernels._library_path(
        kernels.lif_forward.body, sig)


def test_the_kernels_folder_is_in_inductors_cache_folder(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    for value in (None, str(tmp_path)):
        if value is None:
            monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        else:
            monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", value)
        want = Path(kernels.cache_folder())
        assert want.name == "eidsl-kernels" and want.parent == Path(cache_dir())


def test_a_non_contiguous_input_gives_the_formulas_values():
    current = torch.rand(5, 12, generator=torch.Generator().manual_seed(3)).t() * 2     # (12, 5), transposed
    assert not current.is_contiguous()
    spikes, h = kernels.lif_forward(current, 3, 0.5, 1.0, True, 0.0)
    want = kernels.lif_forward.body(current, 3, 0.5, 1.0, True, 0.0)
    assert torch.equal(spikes, want[0]) and torch.equal(h, want[1])


def test_a_compiled_network_runs_each_layer_as_one_op_on_the_eager_kernels():
    from torch._dynamo.utils import counters
    net = eidsl.build(SPECS / "mlp.ei", depth=4, T=2, input=[1, 8, 8])
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 1, 8, 8, generator=gen), torch.randint(0, 10, (4,), generator=gen)
    eidsl.ei_init(net, x)

    graph = torch._dynamo.explain(net)(x).graphs[0]    # (resets dynamo, so before the eager run)
    calls = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert calls.count(torch.ops.eidsl.circuit_lif.default) == 3     # the three hidden E-I layers
    eager = _logits_and_grads(net, lambda: net(x), y)          # compiles the kernels
    counters.clear()
    compiled_net = torch.compile(net, fullgraph=True, backend="aot_eager")
    compiled = _logits_and_grads(net, lambda: compiled_net(x), y)
    # One new graph, the network's: inside the ops the kernels compiled by the eager run serve as they are.
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-6, atol=1e-6)
    assert compiled[1].keys() == eager[1].keys()
    for name in eager[1]:
        torch.testing.assert_close(compiled[1][name], eager[1][name], rtol=1e-5, atol=1e-7, msg=name)
    torch._dynamo.reset()


def test_a_kernel_first_compiled_for_tiny_tensors_still_runs_in_parallel(monkeypatch, tmp_path):
    """Inductor chooses serial or parallel loops from the sizes it compiles for: a kernel first
    compiled for a test's tiny tensors used to run every later layer on one thread (VGG-8's layer-1
    circuit backward: 10.8 instead of 5.3 ms)."""
    import zipfile
    built = _count_builds(monkeypatch, tmp_path)
    offset = _fresh_constant()

    def shifted_row_max(x, y):
        return (x * y + offset).amax(1), x - y      # a row reduction and an elementwise output, both exact

    run = kernels.kernel(shifted_row_max)
    x, y = torch.rand(3, 5), torch.rand(3, 5)
    for got, want in zip(run(x, y), shifted_row_max(x, y)):
        torch.testing.assert_close(got, want)
    with zipfile.ZipFile(built[0]) as package:
        sources = [package.read(n).decode() for n in package.namelist() if n.endswith("kernel.cpp")]
    assert sources and "cpp_fused" in sources[0], "the body did not compile to a C++ kernel"
    assert "#pragma omp parallel" in sources[0]
    big = torch.rand(64, 4096), torch.rand(64, 4096)
    for got, want in zip(run(*big), shifted_row_max(*big)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kept", [False, True], ids=["a-reused", "graph-kept"])
def test_the_backward_in_sample_groups_gives_the_one_call_values(monkeypatch, kept):
    """Large layers run the compiled backward over groups of samples, writing dL/dI_EE into a's buffer:
    the same values (the channel sums add per group, so those to float rounding)."""
    inputs = _layer_inputs((12, 8, 3, 3))           # T = 2: 6 samples
    layer = lambda *xs: fused.CircuitLIF.apply(*xs, *NEURON.values())  # noqa: E731
    whole = _run(layer, inputs)
    monkeypatch.setattr(fused, "CHUNK_BYTES", 12 * 8 * 9 * 4 // 3)     # three groups of two samples
    calls = []
    backward = kernels.circuit_lif_backward
    monkeypatch.setattr(kernels, "circuit_lif_backward", lambda *a: (calls.append(a[0].shape[0]), backward(*a))[1])
    out = layer(*inputs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grouped = torch.autograd.grad(out, inputs, g, retain_graph=kept)
    assert calls == [4, 4, 4]
    assert torch.equal(out, whole[0])
    for name, x, y in zip(("I_EE", "s_I", "W_EI", "g_I", "g_E", "b_E"), grouped, whole[1]):
        assert (x - y).abs().max() <= 1e-6 * y.abs().max(), name       # exact but for the sums' order
    if kept:                                        # a is intact: a second backward agrees
        again = torch.autograd.grad(out, inputs, g)
        for x, y in zip(again, grouped):
            assert torch.equal(x, y)


def test_a_damaged_library_file_is_built_again(monkeypatch, tmp_path):
    built = _count_builds(monkeypatch, tmp_path)
    offset = _fresh_constant()
    x = torch.rand(5, 3)
    kernels.kernel(lambda v: v * offset)(x)         # builds the library
    Path(built[0]).write_bytes(b"not a library")
    again = kernels.kernel(lambda v: v * offset)    # the same body in a new process: finds the damaged file
    torch.testing.assert_close(again(x), x * offset)
    assert built == [built[0], built[0]] and kernels.active()


def test_off_the_cpu_the_kernels_go_through_torch_compile(monkeypatch):
    """The path GPUs take (no device here): torch.compile with dynamic sizes, one entry for every size."""
    from torch._dynamo.utils import counters
    monkeypatch.setattr(kernels, "AHEAD_OF_TIME", ())
    monkeypatch.setattr(kernels, "_build", lambda *a: pytest.fail("an ahead-of-time build off its devices"))
    torch._dynamo.reset()
    counters.clear()
    offset = _fresh_constant()
    run = kernels.kernel(lambda x, y: (x * y + offset).amax(1))
    for n, c in ((6, 6), (12, 6), (8, 9)):
        x, y = torch.rand(n, c), torch.rand(n, c)
        torch.testing.assert_close(run(x, y), (x * y + offset).amax(1))
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_a_library_in_a_folder_others_may_write_is_not_loaded(monkeypatch, tmp_path):
    """Loading a library runs its code: a kernels folder another user may write (the default lives in the
    shared temp folder) is refused with a warning, and the eager path runs."""
    built = _count_builds(monkeypatch, tmp_path)
    offset = _fresh_constant()
    x = torch.rand(5, 3)
    kernels.kernel(lambda v: v * offset)(x)
    assert built
    tmp_path.chmod(0o777)
    monkeypatch.setattr(kernels, "_ACTIVE", True)
    with pytest.warns(RuntimeWarning, match="writable by others"):
        torch.testing.assert_close(kernels.kernel(lambda v: v * offset)(x), x * offset)
    assert not kernels.active()
