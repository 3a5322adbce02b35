"""A fully connected BNN made of the user's own layers, or of Brevitas's, is recognized, exported
to integer form and attacked exactly — with the same results as the zoo's fc-bnn with the same
weights; and a layer it cannot map is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("ortools")

from bnnrobust.attacks.combinatorial import MILPAttack, export  # noqa: E402
from bnnrobust.attacks.combinatorial.integer import ExportError  # noqa: E402
from bnnrobust.attacks.combinatorial.recognize import recognize  # noqa: E402
from bnnrobust.models import build  # noqa: E402
from bnnrobust.models.external import UserModel  # noqa: E402


class SignLinear(nn.Module):
    """A user's binary layer: latent weights, sign in forward."""

    def __init__(self, n_in: int, n_out: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x):
        return F.linear(x, torch.where(self.weight >= 0, 1.0, -1.0), self.bias)


class Binarize(nn.Module):
    """A user's sign activation, sign(0) = +1."""

    def forward(self, x):
        return torch.where(x >= 0, 1.0, -1.0)


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.fc, self.bn, self.act = SignLinear(n_in, n_out), nn.BatchNorm1d(n_out), Binarize()

    def forward(self, x):
        return self.act(self.bn(self.fc(x)))


class HandBNN(nn.Module):
    """784 → 12 → 12 → 10, written without bnnrobust (blocks, a functional flatten)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(784, 12), Block(12, 12)])
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        x = x.reshape(len(x), -1)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@pytest.fixture(scope="module")
def zoo():
    """A zoo fc-bnn 2×12 with random batch-norm statistics (as if trained)."""
    torch.manual_seed(0)
    model = build("fc-bnn", depth=2, width=12).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-20, 20)
            m.running_var.uniform_(5, 50)
            m.weight.data.uniform_(-1, 1)
            m.bias.data.uniform_(-1, 1)
    return model


def hand_copy(zoo: nn.Module) -> nn.Module:
    hand = HandBNN().eval()
    linears = [m for m in zoo.modules() if type(m).__name__ == "BinaryLinear"]
    bns = [m for m in zoo.modules() if isinstance(m, nn.BatchNorm1d)]
    for block, lin, bn in zip(hand.blocks, linears, bns, strict=True):
        block.fc.weight.data.copy_(torch.where(lin.weight >= 0, 1.0, -1.0))
        block.bn.load_state_dict(bn.state_dict())
    hand.head.load_state_dict(zoo.body[-1].state_dict())
    return hand


def points() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(60, 200, (6, 1, 28, 28), generator=torch.Generator().manual_seed(1)) / 255
    return x, torch.zeros(6, dtype=torch.long)


def same_exact_results(ours: nn.Module, zoo: nn.Module) -> None:
    x, _ = points()
    with torch.no_grad():
        y = zoo(x).argmax(1)
    a = MILPAttack(ours, eps=0.02, backend="cpsat-lp", time_limit=30.0).run(x, y)
    b = MILPAttack(zoo, eps=0.02, backend="cpsat-lp", time_limit=30.0).run(x, y)
    assert a.status == b.status and all(s == "optimal" for s in a.status)
    assert torch.allclose(a.objective, b.objective, atol=1e-6)
    assert torch.equal(a.success, b.success)


def integer_forms_equal(ours, zoo) -> None:
    for la, lb in zip(ours.layers, zoo.layers, strict=True):
        assert np.array_equal(la.weight, lb.weight)
        assert np.allclose(la.threshold, lb.threshold)
    assert np.array_equal(ours.out_weight, zoo.out_weight)


def test_a_hand_written_bnn_is_recognized_and_attacked_like_the_zoo_one(zoo):
    hand = UserModel(hand_copy(zoo), name="hand", input_shape=(1, 28, 28))
    x, _ = points()
    with torch.no_grad():
        assert torch.equal(hand(x), zoo(x))
    rebuilt, lines = recognize(hand, example=x)
    assert len(lines) == 4 and "'blocks.0.fc' (SignLinear): ±1 linear 784→12" in lines[1]
    assert "'blocks.1.act' (Binarize) sign, 0 ↦ +1" in lines[2]
    assert "real linear output 12→10" in lines[3]
    integer_forms_equal(export(hand), export(zoo))
    same_exact_results(hand, zoo)


def test_a_brevitas_bnn_is_recognized_and_attacked_like_the_zoo_one(zoo):
    qnn = pytest.importorskip("brevitas.nn")
    quant = pytest.importorskip("brevitas.quant")

    def binary_linear(n_in, n_out):  # ±1 weights, as FINN's BNNs (Brevitas's default: ±0.1)
        return qnn.QuantLinear(n_in, n_out, bias=False, weight_quant=quant.
                               SignedBinaryWeightPerTensorConst.let(scaling_const=1.0))

    def bipolar():
        return qnn.QuantIdentity(act_quant=quant.SignedBinaryActPerTensorConst)

    net = nn.Sequential(nn.Flatten(), binary_linear(784, 12), nn.BatchNorm1d(12), bipolar(),
                        binary_linear(12, 12), nn.BatchNorm1d(12), bipolar(),
                        nn.Linear(12, 10)).eval()
    linears = [m for m in zoo.modules() if type(m).__name__ == "BinaryLinear"]
    bns = [m for m in zoo.modules() if isinstance(m, nn.BatchNorm1d)]
    for q, lin in zip((net[1], net[4]), linears, strict=True):
        q.weight.data.copy_(torch.where(lin.weight >= 0, 1.0, -1.0))
    net[2].load_state_dict(bns[0].state_dict())
    net[5].load_state_dict(bns[1].state_dict())
    net[7].load_state_dict(zoo.body[-1].state_dict())
    model = UserModel(net, name="brevitas", input_shape=(1, 28, 28))
    x, _ = points()
    with torch.no_grad():
        assert torch.allclose(model(x), zoo(x), atol=1e-5)
    _, lines = recognize(model, example=x)
    assert "(QuantLinear): ±1 linear 784→12" in lines[1] and "(QuantIdentity) sign" in lines[1]
    integer_forms_equal(export(model), export(zoo))
    same_exact_results(model, zoo)
    # Brevitas's default binary weights are ±0.1: the scale is folded into the batch norm
    scaled = nn.Sequential(nn.Flatten(), qnn.QuantLinear(
        784, 12, bias=False, weight_quant=quant.SignedBinaryWeightPerTensorConst),
        nn.BatchNorm1d(12), bipolar(), nn.Linear(12, 10)).eval()
    scaled[2].load_state_dict(bns[0].state_dict())
    scaled[2].running_mean.mul_(0.1)
    scaled[2].running_var.mul_(0.01)
    model = UserModel(scaled, name="scaled", input_shape=(1, 28, 28))
    rebuilt, lines = recognize(model, example=x)
    assert "(scaled by 0.1, folded into the batch norm)" in lines[1]
    with torch.no_grad():
        assert torch.equal(rebuilt(x).argmax(1), model(x).argmax(1))


def test_normalization_is_folded_into_the_first_layer(zoo):
    hand = hand_copy(zoo)
    model = UserModel(hand, name="n", input_shape=(1, 28, 28), normalize=((0.1307,), (0.3081,)))
    x, _ = points()
    rebuilt, lines = recognize(model, example=x)
    assert "normalized (x − 0.1307) / 0.3081" in lines[0]
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x), atol=1e-4)


@pytest.mark.parametrize(("change", "message"), [
    ("relu", r"cannot map layer 'blocks.0.act' \(ReLU\)"),
    ("real", r"layer 'blocks.1.fc' \(Linear\) has weights other than ±α"),
    ("no_head", r"expected the real-valued linear output layer"),
])
def test_what_cannot_be_mapped_is_named(zoo, change, message):
    hand = hand_copy(zoo)
    if change == "relu":
        hand.blocks[0].act = nn.ReLU()
    elif change == "real":
        hand.blocks[1].fc = nn.Linear(12, 12)
    else:
        hand.head = nn.Identity()
    with pytest.raises(ExportError, match=message):
        export(UserModel(hand, name="h", input_shape=(1, 28, 28)))


def test_a_hidden_function_call_is_caught_by_the_equality_check(zoo):
    class Sneaky(HandBNN):
        def forward(self, x):
            return super().forward(x) * 2  # not a module: the hooks cannot see it

    sneaky = Sneaky().eval()
    sneaky.load_state_dict(hand_copy(zoo).state_dict())
    with pytest.raises(ExportError, match="does not reproduce the model"):
        export(UserModel(sneaky, name="s", input_shape=(1, 28, 28)))


HAND_MODULE = '''
import torch
import torch.nn.functional as F
from torch import nn


class SignLinear(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in))

    def forward(self, x):
        return F.linear(x, torch.where(self.weight >= 0, 1.0, -1.0))


def bnn():
    sign = type("Sign", (nn.Module,), {"forward": lambda self, x: torch.where(x >= 0, 1.0, -1.0)})
    return nn.Sequential(nn.Flatten(), SignLinear(784, 12), nn.BatchNorm1d(12), sign(),
                         SignLinear(12, 12), nn.BatchNorm1d(12), sign(), nn.Linear(12, 10))
'''


def test_the_exact_commands_take_a_users_bnn(monkeypatch, capsys, fake_mnist, tmp_path, zoo):
    from conftest import run_cli

    (tmp_path / "handbnn.py").write_text(HAND_MODULE)
    monkeypatch.chdir(tmp_path)
    import importlib
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        net = importlib.import_module("handbnn").bnn()
    finally:
        sys.path.remove(str(tmp_path))
    linears = [m for m in zoo.modules() if type(m).__name__ == "BinaryLinear"]
    bns = [m for m in zoo.modules() if isinstance(m, nn.BatchNorm1d)]
    net[1].weight.data.copy_(torch.where(linears[0].weight >= 0, 1.0, -1.0))
    net[4].weight.data.copy_(torch.where(linears[1].weight >= 0, 1.0, -1.0))
    net[2].load_state_dict(bns[0].state_dict())
    net[5].load_state_dict(bns[1].state_dict())
    net[7].load_state_dict(zoo.body[-1].state_dict())
    torch.save(net.state_dict(), tmp_path / "hand.pt")
    code, out, err = run_cli(monkeypatch, capsys, "certify", "--model", "handbnn:bnn",
                             "--weights", str(tmp_path / "hand.pt"), "--eps", "0.01",
                             "--points", "3", "--backend", "cpsat-lp", "--time-limit", "20")
    assert code == 0, err
    text = " ".join(out.split())
    assert "recognized a fully connected BNN:" in text and "'1' (SignLinear): ±1 linear" in text
    assert "certified accuracy" in text
    sys.modules.pop("handbnn", None)
