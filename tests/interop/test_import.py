"""Loading weights: reference DeepEISNN checkpoints (`eidsl import-deepeisnn`) and eidsl state dicts."""
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import eidsl
from eidsl.train.checkpoint import CheckpointError, load_state
from eidsl.interop.deepeisnn import read_checkpoint
from eidsl.cli import app

from conftest import SPECS, fixture

runner = CliRunner()


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name, spec, form", [("EI-SNN_MLP4_MNIST_b8.pt", "mlp.ei", "pth"),
                                              ("EI-SNN_MLP4_MNIST_b8.pt", "mlp.ei", "safetensors"),
                                              ("EI-SNN_VGG8_CIFAR10_b2.pt", "vgg.ei", "safetensors")])
def test_import_cli_reproduces_reference_logits(tmp_path, name, spec, form):
    ref = fixture(name)
    if form == "pth":    # a training checkpoint: weights under model_state_dict, beside other entries
        ckpt = tmp_path / "checkpoint.pth"
        torch.save({"epoch": 299, "model_state_dict": ref["state_dict"], "best_acc": 87.0}, ckpt)
    else:                # a released model.safetensors: its keys come back sorted, not in layer order
        ckpt = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in ref["state_dict"].items()}, ckpt)
    out = tmp_path / "eidsl.safetensors"
    result = run("import-deepeisnn", ckpt, "--spec", SPECS / spec, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"imported {len(ref['state_dict'])} tensors" in result.output
    # The specs default to eidsl's circuit (paper = false); a reference checkpoint is the paper's.
    assert "note: --set paper=true" in result.output

    net = eidsl.build(SPECS / spec, paper=True, seed=123)
    load_state(net, load_file(out))
    with torch.no_grad():
        assert rel_err(net.eval()(ref["input"]), ref["logits"]) <= 1e-5


def test_import_names_the_first_key_that_does_not_fit(tmp_path):
    ref = fixture("EI-SNN_MLP4_MNIST_b8.pt")
    ckpt = tmp_path / "mlp4.pth"
    torch.save({"model_state_dict": ref["state_dict"]}, ckpt)
    out = tmp_path / "out.safetensors"
    # MLP-8's fourth layer is 300 -> 300; MLP-4's fourth is the 300 -> 10 readout.
    result = run("import-deepeisnn", ckpt, "--spec", SPECS / "mlp.ei", "--set", "depth=8", "-o", out)
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "'layers.17.weight_ee' (10, 300) does not fit 'layer_4.E.W_EE' (300, 300)" in message
    assert not out.exists()
    # A ratio that changes the interneuron count: the first layer's W_IE is already off.
    result = run("import-deepeisnn", ckpt, "--spec", SPECS / "mlp.ei", "--set", "ratio=2", "-o", out)
    assert result.exit_code == 2
    assert "'layers.2.weight_ie' (125, 784) does not fit 'layer_1.I.W_IE' (250, 784)" in " ".join(result.output.split())
    assert not out.exists()


def test_import_refuses_a_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    ckpt = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"layers.2.weight_ee": torch.zeros(1)}, "extra": Payload()}, ckpt)
    result = run("import-deepeisnn", ckpt, "--spec", SPECS / "mlp.ei", "-o", tmp_path / "out.safetensors")
    assert result.exit_code == 2
    assert "refused: not a plain tensor checkpoint" in result.output
    assert not marker.exists()
    with pytest.raises(eidsl.EidslError):
        read_checkpoint(ckpt)
    assert not marker.exists()


def test_eidsl_checkpoint_of_another_spec_is_refused_whole():
    ratio4 = eidsl.build(SPECS / "mlp.ei", paper=True, seed=1)
    ratio2 = eidsl.build(SPECS / "mlp.ei", paper=True, ratio=2, seed=2)
    before = {k: v.clone() for k, v in ratio2.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_state(ratio2, ratio4.state_dict())
    assert "'layer_1.E.W_EI' has shape (500, 125) in the checkpoint but (500, 250) in the spec" in str(err.value)
    assert "more" in str(err.value)
    assert all(torch.equal(v, ratio2.state_dict()[k]) for k, v in before.items())     # nothing loaded
    with pytest.raises(CheckpointError, match="'layer_1.E.W_EE' .* is missing"):
        load_state(ratio4, {k: v for k, v in ratio4.state_dict().items() if k != "layer_1.E.W_EE"})
    with pytest.raises(CheckpointError, match="'layer_9.E.W_EE' .* has no place"):
        load_state(ratio4, {**ratio4.state_dict(), "layer_9.E.W_EE": torch.zeros(2)})
    # A compiled model's keys (_orig_mod.) load into the eager one.
    compiled = torch.compile(eidsl.build(SPECS / "mlp.ei", paper=True, seed=3))
    load_state(ratio4, compiled.state_dict())
    assert torch.equal(ratio4.get_parameter("layer_1.E.W_EE"), compiled.get_parameter("_orig_mod.layer_1.E.W_EE"))


def test_imported_weights_evaluate_from_anywhere(tmp_path, monkeypatch):
    """import-deepeisnn -> eval: the file carries its network and spec text, so neither the working
    folder nor the spec file matter afterwards."""
    import shutil

    from eidsl.train import checkpoint as ckpt
    from eidsl.data import datasets
    ref = fixture("EI-SNN_MLP4_MNIST_b8.pt")
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(SPECS / "mlp.ei", work / "mine.ei")
    torch.save({"model_state_dict": ref["state_dict"]}, work / "ref.pth")
    monkeypatch.chdir(work)
    result = run("import-deepeisnn", "ref.pth", "--spec", "mine.ei", "-o", "w.safetensors")
    assert result.exit_code == 0, result.output
    meta = ckpt.load(work / "w.safetensors", with_state=False).meta
    assert meta["spec_text"]["files"]["mine.ei"] == (SPECS / "mlp.ei").read_text()
    assert "motif ei_layer" in meta["spec_text"]["files"]["std/std.ei"]
    (work / "mine.ei").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = run("eval", work / "w.safetensors", "--threads", 1)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert f"of {work / 'mine.ei'} --set paper=true;" in flat and f"imported from {work / 'ref.pth'} (deepeisnn)" in flat
    assert "data: mnist5k test split" in result.output

    # The same number computed here, from the reference state dict and the spec in the repository.
    net = eidsl.build(SPECS / "mlp.ei", paper=True).eval()
    load_state(net, load_file(work / "w.safetensors"))
    _, test, _ = datasets.load("mnist5k", T=4, augment=False)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        acc = float((net(x).argmax(1) == y).float().mean())
    assert f"test accuracy: {100 * acc:.2f}%" in result.output
