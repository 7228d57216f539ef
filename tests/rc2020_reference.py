"""Test reference: the reproducibility report's CIFAR-10 ResNet-18 with Echo's SE or CBAM, re-implemented from their
description (digantamisra98/Reproducibilty-Challenge-ECANET models/att_models.py, digantamisra98/Echo
echoAI/Attention/cv/t_attn.py and echoAI/utils/torch_utils.py). The gates' module names follow Echo's code; the
ResNet is official_eca.py's. Written independently of ``eca_timm`` and timm: plain torch only.
"""
import torch
from torch import nn
from torch.nn import functional as F

from official_eca import ECABasicBlock, OfficialEcaResNet


class ChannelGate(nn.Module):
    """Echo: one biased MLP (Linear C -> C // 16, ReLU, Linear back) over each pooled descriptor, summed, sigmoid."""

    def __init__(self, channels: int, pool_types=('avg', 'max')) -> None:
        super().__init__()
        hidden = channels // 16
        self.gate_c = nn.Sequential()
        self.gate_c.add_module('flatten', nn.Flatten())
        self.gate_c.add_module('gate_c_fc_0', nn.Linear(channels, hidden))
        self.gate_c.add_module('gate_c_relu_1', nn.ReLU())
        self.gate_c.add_module('gate_c_fc_final', nn.Linear(hidden, channels))
        self.pool_types = pool_types

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pools = {'avg': F.avg_pool2d, 'max': F.max_pool2d}
        att = sum(self.gate_c(pools[p](x, x.shape[2:], stride=x.shape[2:])) for p in self.pool_types)
        return x * torch.sigmoid(att)[:, :, None, None]


class AttentionGate(nn.Module):
    """Echo: channel max and mean -> conv (with bias) -> BatchNorm2d(1, momentum 0.01) -> sigmoid -> scale."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv_bn = nn.Sequential(nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2),
                                     nn.BatchNorm2d(1, eps=1e-5, momentum=0.01))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv_bn(pooled))


class SE(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, ('avg',))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ChannelGate(x)


class CBAM(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels)
        self.SpatialGate = AttentionGate(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


def att_resnet18(att) -> OfficialEcaResNet:
    """att_models.py's ResNet-18: the official ECA-ResNet-18 layout (ImageNet stem, attention after bn2, 10 classes)
    with ``att`` in place of each block's ECA (its keys: ``.eca.`` where att_models.py has ``.att.``)."""
    model = OfficialEcaResNet(ECABasicBlock, (2, 2, 2, 2), (3, 3, 3, 3), num_classes=10)
    for block in model.modules():
        if isinstance(block, ECABasicBlock):
            block.eca = att(block.bn2.num_features)
    return model
