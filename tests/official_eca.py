"""Test reference: the official ECA-Net architectures (BangguWu/ECANet) re-implemented from their description.

Module names follow the official code, so ``state_dict()`` keys are the released files' keys (torchvision
ResNet / MobileNetV2 layout, ECA at ``.eca`` or as the last item of an inverted residual's ``conv``). Written
independently of ``eca_timm``: plain torch only.
"""
from typing import Sequence

import torch
from torch import nn


class OfficialEca(nn.Module):
    """avg pool -> Conv1d over channels -> sigmoid -> scale."""

    def __init__(self, k_size: int = 3) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)  # B C 1 1
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


class ECABasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, k_size: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.eca = OfficialEca(k_size)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.eca(self.bn2(self.conv2(out)))
        return self.relu(out + residual)


class ECABottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, k_size: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.eca = OfficialEca(k_size)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.eca(self.bn3(self.conv3(out)))
        return self.relu(out + residual)


class OfficialEcaResNet(nn.Module):
    def __init__(self, block, layers: Sequence[int], k_size: Sequence[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], k_size[0])
        self.layer2 = self._make_layer(block, 128, layers[1], k_size[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], k_size[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], k_size[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, k_size: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, k_size)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, k_size=k_size) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def official_resnet(depth: int, k_size: Sequence[int]) -> OfficialEcaResNet:
    layers = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
    return OfficialEcaResNet(ECABasicBlock if depth < 50 else ECABottleneck, layers, k_size)


class ConvBNReLU(nn.Sequential):
    def __init__(self, inp: int, oup: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, k_size: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [ConvBNReLU(inp, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), OfficialEca(k_size)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class OfficialEcaMobileNetV2(nn.Module):
    """``small_k_below``: blocks with fewer output channels use k=1, the others k=3."""

    def __init__(self, small_k_below: int = 96, num_classes: int = 1000) -> None:
        super().__init__()
        setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                   (6, 320, 1, 1)]
        features, inp = [ConvBNReLU(3, 32, stride=2)], 32
        for t, c, n, s in setting:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t, 1 if c < small_k_below else 3))
                inp = c
        features.append(ConvBNReLU(inp, 1280, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.25), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(-1).mean(-1))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics (so a wrong mapping cannot hide behind default init), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            r = torch.rand(t.shape, generator=g)
            t.copy_(0.5 + r if name.endswith('running_var') else (r - 0.5) * 0.4)
    return model.eval()


def save_official(model: nn.Module, path, arch: str = 'se_resnet50') -> None:
    """Save like the released files: DataParallel keys in a wrapper dict with a (possibly wrong) arch."""
    torch.save({
        'epoch': 100, 'arch': arch, 'best_prec1': torch.tensor(77.4),
        'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()},
        'optimizer': {'state': {}, 'param_groups': [{'lr': 0.0001, 'momentum': 0.9, 'params': [0, 1]}]},
    }, path)
