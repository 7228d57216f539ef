"""Test reference: the reproducibility report's CIFAR-10 ResNet-18 with Echo's SE or CBAM, re-implemented from their
description (digantamisra98/Reproducibilty-Challenge-ECANET models/att_models.py, digantamisra98/Echo
echoAI/Attention/cv/t_attn.py and echoAI/utils/torch_utils.py). Module names follow that code, so ``state_dict()``
keys are its keys. Written independently of ``eca_timm`` and timm: plain torch only.
"""
import torch
from torch import nn
from torch.nn import functional as F


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


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, att) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.att = att(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.att(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class AttResNet18(nn.Module):
    """ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), 2-2-2-2 basic blocks with ``att`` after bn2."""

    def __init__(self, att, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [64, 64, 128, 256, 512]
        for i in range(1, 5):
            stride = 1 if i == 1 else 2
            self.add_module(f'layer{i}', nn.Sequential(BasicBlock(chans[i - 1], chans[i], stride, att),
                                                       BasicBlock(chans[i], chans[i], 1, att)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
