"""Bring your own model: a plain Python module with a factory and a state dict, an ONNX export,
the options that fit them to the contract, and the error for each kind of bad input."""

from __future__ import annotations

import json
import textwrap
import warnings

import pytest
import torch
from conftest import run_cli as run
from torch import nn

from bnnrobust.data import load
from bnnrobust.errors import ModelError
from bnnrobust.models import build
from bnnrobust.models.external import UserModel, check_outputs, from_factory, from_onnx
from bnnrobust.train import fit

MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    """A user's own small CNN, written without bnnrobust."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=2)
        self.head = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def small():
    return Net()


def pair():
    class Both(Net):
        def forward(self, x):
            logits = super().forward(x)
            return logits.softmax(1), logits
    return Both()


def probabilities():
    class Soft(Net):
        def forward(self, x):
            return super().forward(x).softmax(1)
    return Soft()


def not_a_model():
    return "a string"


def broken():
    raise ValueError("no GPU here")


CONSTANT = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A Python module ``usernets`` in the current folder, and weights for its ``small``."""
    (tmp_path / "usernets.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    net = from_factory("usernets:small")
    torch.save(net.state_dict(), tmp_path / "small.pt")
    yield tmp_path, net
    import sys
    sys.modules.pop("usernets", None)


def test_factory_and_weights_load_the_same_network(user_module):
    folder, net = user_module
    again = from_factory("usernets:small", weights=folder / "small.pt")
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(again(x), net(x))


def test_normalize_bounds_and_flat_inputs_happen_inside_the_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 10))
    model = UserModel(net, name="t", input_shape=(784,), normalize=((0.5,), (0.25,)),
                      bounds=(0.0, 255.0))
    x = torch.rand(3, 1, 28, 28)
    expected = net(((255 * x).flatten(1) - 0.5) / 0.25)
    assert torch.allclose(model(x), expected)
    rgb = UserModel(nn.Flatten(), name="t", normalize=((0.1, 0.2, 0.3), (1.0, 2.0, 4.0)))
    y = torch.rand(2, 3, 4, 4)
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 2.0, 4.0])
    assert torch.allclose(rgb(y), ((y - mean[:, None, None]) / std[:, None, None]).flatten(1))


def test_tuple_and_probability_outputs(user_module):
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ModelError, match=r"returns a tuple of 2 outputs; pick the logits with "
                                         r"--output-index"):
        check_outputs(UserModel(from_factory("usernets:pair"), name="p"), x)
    picked = UserModel(from_factory("usernets:pair"), name="p", output_index=1)
    check_outputs(picked, x)
    assert picked.num_classes == 10
    with pytest.raises(ModelError, match="seems to return probabilities"):
        check_outputs(UserModel(from_factory("usernets:probabilities"), name="s"), x)
    logs = UserModel(from_factory("usernets:probabilities"), name="s", logits_from_probs=True)
    check_outputs(logs, x)
    assert torch.allclose(logs(x).exp().sum(1), torch.ones(4), atol=1e-5)
    with pytest.raises(ModelError, match="scores 10 classes but --classes says 7"):
        check_outputs(UserModel(from_factory("usernets:small"), name="s", num_classes=7), x)
    with pytest.raises(ModelError, match=r"the model failed on inputs of shape \(4, 3, 28, 28\)"):
        check_outputs(UserModel(from_factory("usernets:small"), name="s"), x.repeat(1, 3, 1, 1))


@pytest.mark.parametrize(("spec", "message"), [
    ("usernets", "--model must be package.module:factory"),
    ("nowhere:small", "cannot import 'nowhere'"),
    ("usernets:missing", "'usernets' has no attribute 'missing'"),
    ("usernets:CONSTANT", "usernets:CONSTANT is a int, not a callable"),
    ("usernets:not_a_model", r"usernets:not_a_model\(\) returned a str, not a torch.nn.Module"),
    ("usernets:broken", r"calling usernets:broken\(\) failed: ValueError: no GPU here"),
])
def test_bad_factories(user_module, spec, message):
    with pytest.raises(ModelError, match=message):
        from_factory(spec)


def test_bad_weights(user_module):
    folder, _ = user_module
    other = nn.Linear(3, 2)
    torch.save(other.state_dict(), folder / "other.pt")
    with pytest.raises(ModelError, match="do not fit the model"):
        from_factory("usernets:small", weights=folder / "other.pt")
    (folder / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(ModelError, match="is not a state dict"):
        from_factory("usernets:small", weights=folder / "junk.pt")
    torch.save({"model": other}, folder / "pickled.pt")  # a whole module: refused unread
    with pytest.raises(ModelError, match="weights_only=True"):
        from_factory("usernets:small", weights=folder / "pickled.pt")
    with pytest.raises(ModelError, match="does not exist"):
        from_factory("usernets:small", weights=folder / "none.pt")


def test_the_cli_audits_a_users_module(monkeypatch, capsys, user_module, fake_mnist):
    folder, _ = user_module
    audit_dir = folder / "audit"
    fast = ["--points", "12", "--holdout", "10", "--steps", "2", "--restarts", "1",
            "--cw-steps", "3", "--aa-steps", "2", "--aa-queries", "10", "--no-transfer",
            "--eps", "0.1"]
    code, out, err = run(monkeypatch, capsys, "audit", "--model", "usernets:small",
                         "--weights", str(folder / "small.pt"), *fast, "--out", str(audit_dir))
    assert code == 0, err
    assert "usernets:small (your model" in " ".join(out.split())
    card = json.loads((audit_dir / "audit.json").read_text())
    assert card["model"]["source"] == "usernets:small" and card["data"]["points"] == 12
    code, out, err = run(monkeypatch, capsys, "eval", "--model", "usernets:pair",
                         "--limit", "20")
    assert code == 2 and "--output-index" in err and "Traceback" not in err
    code, out, err = run(monkeypatch, capsys, "eval", "--model", "usernets:pair",
                         "--output-index", "1", "--limit", "20")
    assert code == 0 and "clean accuracy on mnist test (20 images)" in out
    for args, message in [
        (["--model", "usernets:small", "--weights", str(folder / "junk.pt")], "does not exist"),
        (["--model", "nowhere:net"], "cannot import 'nowhere'"),
        (["--weights", str(folder / "small.pt")], "give the model once"),
        (["--model", "usernets:small", "--normalize", "0.1"], "--normalize needs as many means"),
        (["--model", "usernets:small", "--bounds", "1,0"], "--bounds must be LOW,HIGH"),
        (["--model", "usernets:small", "--input-shape", "a,b"], "--input-shape must be"),
    ]:
        code, _, err = run(monkeypatch, capsys, "eval", *args)
        assert code == 2 and message in " ".join(err.split()), (args, err)
        assert "Traceback" not in err


def _onnx_available() -> None:
    from bnnrobust.models.external import _onnx_modules
    try:
        _onnx_modules()
    except ModelError as exc:
        pytest.skip(str(exc))


def _export(model: nn.Module, path, x: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), x[:1], str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})


@pytest.mark.parametrize("precision", ["full", "binary", "scaled"])
def test_onnx_export_of_a_zoo_model_converts_back(tmp_path, precision):
    # sign (with sign(0) = +1) and batch norm survive the round trip
    _onnx_available()
    torch.manual_seed(0)
    model = build("galloway-cnn", width=4, precision=precision).eval()
    x = torch.rand(64, 1, 28, 28)
    _export(model, tmp_path / "m.onnx", x)
    converted = from_onnx(tmp_path / "m.onnx").eval()
    with torch.no_grad():
        assert (converted(x) - model(x)).abs().max() <= 1e-5


def test_the_cli_audits_an_onnx_export(monkeypatch, capsys, fake_mnist, tmp_path):
    _onnx_available()
    torch.manual_seed(0)
    model = build("galloway-cnn", width=4, precision="binary")
    fit(model, load("mnist", "train"), epochs=1, batch_size=32, progress=False)
    x, _ = load("mnist", "test")
    _export(model, tmp_path / "b4.onnx", x)
    fast = ["--points", "12", "--holdout", "10", "--steps", "2", "--restarts", "1",
            "--cw-steps", "3", "--aa-steps", "2", "--aa-queries", "10", "--no-transfer",
            "--eps", "0.1", "--exact-points", "0"]
    code, out, err = run(monkeypatch, capsys, "audit", "--onnx", str(tmp_path / "b4.onnx"),
                         *fast, "--out", str(tmp_path / "audit"))
    assert code == 0, err
    assert "b4.onnx (your model" in " ".join(out.split())
    assert (tmp_path / "audit" / "audit.json").exists()


def test_onnx_errors(tmp_path):
    _onnx_available()
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Hardmax", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 10])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 10])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "hardmax.onnx"))
    with pytest.raises(ModelError, match=r"does not support: Hardmax \(ai.onnx, opset 13\)"):
        from_onnx(tmp_path / "hardmax.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01junk")
    with pytest.raises(ModelError, match="is not a valid ONNX model"):
        from_onnx(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="does not exist"):
        from_onnx(tmp_path / "none.onnx")


def test_onnx_export_of_a_trained_b_model_matches_on_1000_mnist_images(data_root, tmp_path):
    # the acceptance figure: logits within 1e-5 on 1,000 real test images
    _onnx_available()
    torch.manual_seed(0)
    model = build("galloway-cnn", width=16, precision="binary")
    fit(model, load("mnist", "train", root=data_root, limit=2000), epochs=1, progress=False)
    x, _ = load("mnist", "test", root=data_root, limit=1000)
    _export(model, tmp_path / "b16.onnx", x)
    converted = from_onnx(tmp_path / "b16.onnx").eval()
    with torch.no_grad():
        gap = (converted(x) - model.eval()(x)).abs().max().item()
    print(f"\nONNX round trip of a trained B16, 1000 MNIST test images: max |Δlogit| = {gap:.2e}")
    assert gap <= 1e-5
