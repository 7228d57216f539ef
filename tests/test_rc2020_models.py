"""The reproducibility report's ResNet-18s (``*_resnet18_rc2020``) are its models: parameters, attention, init, and
the same logits and BatchNorm updates as an independent re-implementation of its code (rc2020_reference.py,
official_eca.py, torchvision's resnet18). They join timm's model contract through ``STUDY_MODULES``
(tests/test_models.py)."""
import math

import pytest
import timm
import torch
import torchvision

import eca_timm
from official_eca import ECABasicBlock, OfficialEcaResNet, randomize_
from rc2020_reference import CBAM, SE, att_resnet18

# Counted by the report's train_cifar.py ("Number of model parameters"), 10 classes.
PARAMS = {'resnet18_rc2020': 11_181_642, 'eca_resnet18_rc2020': 11_181_678, 'se_resnet18_rc2020': 11_270_722,
          'cbam_resnet18_rc2020': 11_270_890}


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _reference(name: str) -> torch.nn.Module:
    if name == 'resnet18_rc2020':
        return torchvision.models.resnet18(num_classes=10)
    if name == 'eca_resnet18_rc2020':
        return OfficialEcaResNet(ECABasicBlock, (2, 2, 2, 2), (3, 5, 5, 5), num_classes=10)
    return att_resnet18(SE if name.startswith('se_') else CBAM)


def _to_timm_keys(state_dict: dict, cbam: bool) -> dict:
    """The reference's keys onto timm's ResNet: attention at ``.se``, Echo's Linear layers as 1x1 convs."""
    names = {'.eca.SpatialGate.conv_bn.0.': '.se.spatial.conv.conv.',
             '.eca.SpatialGate.conv_bn.1.': '.se.spatial.conv.bn.',
             '.eca.ChannelGate.gate_c.gate_c_fc_0.': '.se.channel.fc1.' if cbam else '.se.fc1.',
             '.eca.ChannelGate.gate_c.gate_c_fc_final.': '.se.channel.fc2.' if cbam else '.se.fc2.', '.eca.': '.se.'}
    out = {}
    for k, v in state_dict.items():
        for old, new in names.items():
            k = k.replace(old, new)
        out[k] = v[:, :, None, None] if k.endswith(('fc1.weight', 'fc2.weight')) else v
    return out


def test_the_four_models_are_study_models():
    assert set(PARAMS) <= set(timm.list_models(module=list(eca_timm.STUDY_MODULES)))
    assert set(PARAMS) == set(timm.list_models('*_rc2020'))


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_parameters_equal_the_reports(name):
    model = timm.create_model(name, device='meta')
    assert _n_params(model) == PARAMS[name] == _n_params(_reference(name))
    assert timm.get_pretrained_cfg(name).input_size == (3, 32, 32)


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_same_outputs_and_batchnorm_updates_as_the_reports_code(name):
    reference = randomize_(_reference(name))
    model = timm.create_model(name).eval()
    model.load_state_dict(_to_timm_keys(reference.state_dict(), 'cbam' in name))  # strict: the same tensors
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
        reference.train(), model.train()  # batch statistics, and each BatchNorm's momentum on its running stats
        torch.testing.assert_close(model(x), reference(x))
    torch.testing.assert_close(model.state_dict(), _to_timm_keys(reference.state_dict(), 'cbam' in name))


def test_attention_is_the_reports():
    stage_blocks = lambda m: [getattr(m, f'layer{i}')[0] for i in range(1, 5)]  # noqa: E731
    assert timm.create_model('eca_resnet18_rc2020').eca_kernel_sizes == (3, 5, 5, 5)
    se = stage_blocks(timm.create_model('se_resnet18_rc2020'))
    assert [b.se.fc1.out_channels for b in se] == [4, 8, 16, 32] and all(b.se.fc1.bias is not None for b in se)
    for blk in stage_blocks(timm.create_model('cbam_resnet18_rc2020')):
        channel, spatial = blk.se.channel, blk.se.spatial.conv
        assert channel.fc1.out_channels == blk.bn2.num_features // 16 and channel.fc1.bias is not None
        assert spatial.conv.kernel_size == (3, 3) and spatial.conv.bias is not None and spatial.bn.momentum == 0.01


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_init_is_torchvisions_and_nn_linears(name):
    """No zero-initialised last BN (torchvision's resnet18 has none); Echo's attention MLPs are nn.Linear layers with
    PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), where timm's ResNet init draws kaiming-normal."""
    torch.manual_seed(0)
    model = timm.create_model(name)
    assert all(bool((m.bn2.weight == 1).all()) for m in model.modules() if isinstance(m, timm.models.resnet.BasicBlock))
    fcs = [m for n, m in model.named_modules() if n.endswith(('.fc1', '.fc2'))]
    assert len(fcs) == (16 if name.startswith(('se_', 'cbam_')) else 0)
    for fc in fcs:
        bound = 1 / math.sqrt(fc.in_channels)
        assert fc.weight.abs().max() <= bound and fc.bias.abs().max() <= bound
        assert fc.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.2)  # uniform, not normal
