"""EcaLayer against an independent reference written from the paper's equations."""
import math

import pytest
import torch
import torch.nn.functional as F

from eca_timm import EcaLayer, adaptive_kernel_size


def reference_eca(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y_c = mean_hw x_c; w_c = sigmoid(sum_j k_j * y_{c + j - (k-1)/2}) with zero padding; out = x * w."""
    b, c = x.shape[:2]
    k = weight.numel()
    pad = (k - 1) // 2
    y = x.float().sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])
    y = F.pad(y, (pad, pad))
    w = weight.float().flatten()
    z = torch.stack([(y[:, i:i + k] * w).sum(dim=1) for i in range(c)], dim=1)
    gate = 1.0 / (1.0 + torch.exp(-z))
    return x.float() * gate.view(b, c, 1, 1)


@pytest.mark.parametrize('k', [1, 3, 5, 7, 9])
@pytest.mark.parametrize('channels_last', [False, True])
def test_matches_reference_fp32(k, channels_last):
    torch.manual_seed(k)
    layer = EcaLayer(32, kernel_size=k)
    x = torch.randn(2, 32, 5, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = layer.conv.weight.detach().clone().requires_grad_(True)
    x = x.requires_grad_(True)

    out = layer(x)
    ref = reference_eca(x_ref, w_ref)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)

    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.conv.weight.grad, w_ref.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('k', [1, 3, 5, 7, 9])
@pytest.mark.parametrize('channels_last', [False, True])
def test_matches_reference_bf16(k, channels_last):
    torch.manual_seed(k)
    layer = EcaLayer(32, kernel_size=k).to(torch.bfloat16)
    x = torch.randn(2, 32, 5, 6).to(torch.bfloat16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    ref = reference_eca(x.detach(), layer.conv.weight.detach())
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    assert torch.isfinite(layer.conv.weight.grad).all()


def test_autocast_bf16_keeps_input_dtype():
    layer = EcaLayer(16, kernel_size=3)
    x = torch.randn(2, 16, 4, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.float32  # the gate never widens or narrows the feature map
    torch.testing.assert_close(out, reference_eca(x, layer.conv.weight.detach()), rtol=2e-2, atol=2e-2)


def test_only_parameter_is_conv_weight():
    layer = EcaLayer(64, kernel_size=5)
    assert [(n, tuple(p.shape)) for n, p in layer.named_parameters()] == [('conv.weight', (1, 1, 5))]


@pytest.mark.parametrize('channels', [1, 2, 16, 64, 100, 256, 512, 1024, 2048, 4096])
def test_adaptive_rule(channels):
    t = int(abs((math.log(channels, 2) + 1) / 2))
    expected = t if t % 2 else t + 1
    assert adaptive_kernel_size(channels) == expected
    assert EcaLayer(channels, 'adaptive').kernel_size == expected


def test_adaptive_rule_known_values():
    # (log2 C + 1) / 2 -> 64: 3.5 -> 3; 256: 4.5 -> 4 -> 5; 2048: 6 -> 7
    assert [adaptive_kernel_size(c) for c in (64, 256, 512, 2048)] == [3, 5, 5, 7]


def test_explicit_kernel_size_wins_over_channels():
    # timm's EcaModule ignores kernel_size when channels is given; the released weights need it honoured.
    assert EcaLayer(2048, kernel_size=3).kernel_size == 3


@pytest.mark.parametrize('bad', [0, -3, 2, 4, 3.0, '5', True, None])
def test_bad_kernel_size(bad):
    with pytest.raises(ValueError, match='ECA kernel size must be a positive odd int'):
        EcaLayer(16, kernel_size=bad)


def test_adaptive_needs_channels():
    with pytest.raises(ValueError, match="kernel_size='adaptive' needs channels"):
        EcaLayer(kernel_size='adaptive')


def test_device_dtype_kwargs():
    layer = EcaLayer(8, kernel_size=3, device='meta', dtype=torch.bfloat16)
    assert layer.conv.weight.device.type == 'meta' and layer.conv.weight.dtype == torch.bfloat16
