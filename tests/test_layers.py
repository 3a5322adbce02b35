"""Binary layers: forward equals the closed form; options; seeding; summary counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnrobust.data import InputQuantizer
from bnnrobust.errors import BnnRobustError
from bnnrobust.nn import (
    BinaryConv2d,
    BinaryLinear,
    LearnedScale,
    binary_layers,
    clip_latent_weights,
    is_stochastic,
    seed_stochastic,
    summary,
)


def _sign(w):
    return torch.where(w >= 0, 1.0, -1.0)


def test_binary_linear_forward_and_distinct_weights():
    torch.manual_seed(0)
    layer = BinaryLinear(6, 3)
    x = torch.randn(4, 6)
    assert torch.equal(layer(x), F.linear(x, _sign(layer.weight)))
    wb = layer.binary_weight()
    assert set(wb.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(wb, layer.weight)  # the latent weights are kept apart


def test_binary_linear_input_normalization_is_normalize_then_linear():
    torch.manual_seed(0)
    layer = BinaryLinear(6, 3, bias=True, input_normalization=(0.1307, 0.3081))
    x = torch.rand(4, 6)
    expected = F.linear((x - 0.1307) / 0.3081, _sign(layer.weight), layer.bias)
    assert torch.allclose(layer(x), expected, atol=1e-5)
    # the gradient w.r.t. the input is the normalized layer's
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad, (_sign(layer.weight).sum(0) / 0.3081).expand(4, 6), atol=1e-5)


@pytest.mark.parametrize("value", [(0.1, 0.0), (0.1, -1.0), (float("nan"), 1.0), (0.1,), "ab"])
def test_binary_linear_rejects_bad_input_normalization(value):
    with pytest.raises(BnnRobustError, match="input_normalization"):
        BinaryLinear(6, 3, input_normalization=value)


def test_binary_conv_forward():
    torch.manual_seed(0)
    layer = BinaryConv2d(2, 4, 3, stride=2, padding=1)
    x = torch.randn(2, 2, 9, 9)
    assert torch.equal(layer(x), F.conv2d(x, _sign(layer.weight), None, 2, 1))


def test_latent_init_truncated_normal_sigma_0_2():
    torch.manual_seed(0)
    w = BinaryConv2d(64, 128, 6).weight
    assert abs(w.std().item() - 0.2 * 0.88) < 0.01  # std of N(0, σ) truncated at 2σ is 0.88σ
    assert w.abs().max() <= 0.4


def test_xnor_scaling():
    torch.manual_seed(0)
    layer = BinaryLinear(5, 3, xnor=True)
    x = torch.randn(2, 5)
    alpha = layer.weight.abs().mean(dim=1, keepdim=True)
    assert torch.allclose(layer(x), F.linear(x, _sign(layer.weight) * alpha))


def test_binarize_input_is_batchnorm_then_sign():
    torch.manual_seed(0)
    layer = BinaryConv2d(3, 2, 3, binarize_input=True).eval()
    with torch.no_grad():
        layer.input_act.bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        layer.input_act.bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.0]))
    x = torch.randn(2, 3, 5, 5)
    xs = _sign(layer.input_act.bn(x))
    assert torch.equal(layer(x), F.conv2d(xs, _sign(layer.weight)))


def test_stochastic_layer_resamples_and_seeds():
    torch.manual_seed(0)
    model = nn.Sequential(BinaryLinear(20, 20, stochastic=True), BinaryLinear(20, 2))
    assert is_stochastic(model) and not is_stochastic(nn.Sequential(BinaryLinear(2, 2)))
    x = torch.randn(3, 20)
    assert not torch.equal(model(x), model(x))
    seed_stochastic(model, 7)
    a = model(x)
    seed_stochastic(model, 7)
    assert torch.equal(a, model(x))
    seed_stochastic(model, 8)
    assert not torch.equal(a, model(x))


def test_learned_scale():
    scale = LearnedScale()
    assert scale.scale.item() == pytest.approx(0.05)
    x = torch.ones(3, requires_grad=True)
    scale(x).sum().backward()
    assert scale.scale.grad.item() == 3.0


def test_clip_latent_weights():
    layer = BinaryLinear(3, 2)
    with torch.no_grad():
        layer.weight.mul_(100)
    clip_latent_weights(layer)
    assert layer.weight.abs().max() <= 1.0
    assert binary_layers(nn.Sequential(layer, nn.Linear(2, 2))) == [layer]


def test_summary_counts_bits():
    model = nn.Sequential(BinaryLinear(10, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    s = summary(model)
    assert s.binary_params == 50
    assert s.float_params == 10 + 12
    assert s.memory_bits == 50 + 32 * 22
    assert s.float32_memory_bits == 32 * 72
    assert s.buffer_values == 10  # running mean and var
    assert "BinaryLinear" in str(s)


def test_input_quantizer_levels_and_surrogate():
    q = InputQuantizer(2)
    pixels = torch.tensor([0.0, 63.0, 64.0, 127.0, 128.0, 255.0]) / 255
    # bins of 64 levels, each the centre of its integer pixels (31.5, 95.5, ...) over 255
    expected = torch.tensor([31.5, 31.5, 95.5, 95.5, 159.5, 223.5]) / 255
    assert torch.allclose(q(pixels), expected, atol=1e-7)
    assert torch.equal(InputQuantizer(8)(pixels), pixels)  # nothing to discretize at 8 bits
    x = pixels.clone().requires_grad_()
    q(x).sum().backward()
    assert x.grad.abs().sum() == 0  # floor: no gradient without BPDA
    assert q.non_differentiable and torch.equal(q.surrogate(pixels), pixels)


def test_input_quantizer_bad_bits():
    for bits in (0, 9, 2.5, True):
        try:
            InputQuantizer(bits)
        except BnnRobustError as exc:
            assert "1..8" in str(exc)
        else:
            raise AssertionError(f"bits={bits} accepted")
