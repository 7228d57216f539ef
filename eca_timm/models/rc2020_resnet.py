"""The reproducibility report's CIFAR-10 ResNet-18s (none, SE, CBAM, ECA), as its code builds them.

The ECA-Net reproducibility report (NeurIPS Reproducibility Challenge 2020,
github.com/digantamisra98/Reproducibilty-Challenge-ECANET, ``train_cifar.py``) trained torchvision's ImageNet-stem
ResNet-18 (7x7/2 conv + max-pool, so a 32x32 image reaches the last stage at 1x1) on CIFAR-10 with attention after
each block's last BN: ECA with the paper's adaptive kernel sizes (3, 5, 5, 5), and SE and CBAM from its ``echoAI``
dependency (github.com/digantamisra98/Echo, ``echoAI/Attention/cv/t_attn.py``): SE with C // 16 hidden channels and
biases (4, 8, 16, 32), CBAM with the same biased MLP over average and max pool and a spatial gate of a 3x3 conv with
bias and a BatchNorm of momentum 0.01. These are timm's ResNet-18 with those attention layers built by timm's
``create_attn`` (timm's ``SEModule``, CBAM's channel gate ``ChannelAttn``; ECA the plugin's ``EcaResNet``), no
zero-initialised last BN (torchvision's default) and the attention MLPs initialised as Echo's ``nn.Linear`` layers.
Parameters (10 classes): 11,181,642 / 11,270,722 / 11,270,890 / 11,181,678.

Registered as ``resnet18_rc2020``, ``se_resnet18_rc2020``, ``cbam_resnet18_rc2020``, ``eca_resnet18_rc2020``
(module group ``rc2020_resnet``, one of ``STUDY_MODULES``); ``train_configs/cifar10_rc2020/`` trains them.
"""
from functools import partial
from typing import Any, Dict, Optional

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ConvNormAct, SEModule, create_act_layer
from timm.layers.cbam import ChannelAttn
from timm.models import register_model, generate_default_cfgs
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from ._builder import build_eca_model
from .eca_resnet import RESNET_KEY_MAPPING, EcaBasicBlock, EcaResNet

__all__ = ['EchoCbam', 'EchoSpatialGate', 'Rc2020ResNet']


class EchoSpatialGate(nn.Module):
    """CBAM's spatial gate as Echo's ``AttentionGate``: channel max and mean (in that order) -> k x k conv with bias
    -> BatchNorm (momentum 0.01) -> sigmoid -> scale. timm's ``SpatialAttn`` has no conv bias, momentum 0.1 and
    mean first."""

    def __init__(self, kernel_size: int = 3, bn_momentum: float = 0.01, device=None, dtype=None) -> None:
        super().__init__()
        self.conv = ConvNormAct(2, 1, kernel_size, bias=True, apply_act=False, norm_kwargs=dict(momentum=bn_momentum),
                                device=device, dtype=dtype)
        self.gate = create_act_layer('sigmoid')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_attn = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * self.gate(self.conv(x_attn))


class EchoCbam(nn.Module):
    """Echo's CBAM: timm's ``ChannelAttn`` with a biased MLP of C // 16 hidden channels, then ``EchoSpatialGate``."""

    def __init__(self, channels: int, spatial_kernel_size: int = 3, device=None, dtype=None) -> None:
        super().__init__()
        self.channel = ChannelAttn(channels, rd_ratio=1 / 16, mlp_bias=True, device=device, dtype=dtype)
        self.spatial = EchoSpatialGate(spatial_kernel_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class Rc2020ResNet(ResNet):
    """timm's ResNet initialised as the report's models: torchvision's init (no zero-initialised last BN), and the
    attention MLPs, which Echo builds as ``nn.Linear``, with PyTorch's default init instead of timm's kaiming-normal
    one for convs (a 1x1 conv's default init is ``nn.Linear``'s). Arguments: timm's ``ResNet``."""
    checkpoint_key_mapping = RESNET_KEY_MAPPING

    def init_weights(self, zero_init_last: bool = False) -> None:
        super().init_weights(zero_init_last=zero_init_last)
        for m in self.modules():
            if isinstance(m, (SEModule, ChannelAttn)):
                m.fc1.reset_parameters()
                m.fc2.reset_parameters()


# Model name -> attention layer timm's create_attn builds in every block (None: plain ResNet-18).
RC2020_ATTENTION: Dict[str, Any] = {
    'resnet18_rc2020': None,
    'se_resnet18_rc2020': partial(SEModule, rd_ratio=1 / 16, rd_divisor=1, bias=True),
    'cbam_resnet18_rc2020': EchoCbam,
    'eca_resnet18_rc2020': 'eca',
}


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> ResNet:
    attn: Optional[Any] = RC2020_ATTENTION[variant]
    model_args: Dict[str, Any] = dict(layers=(2, 2, 2, 2), zero_init_last=False)
    if attn == 'eca':  # the paper's adaptive rule: 3, 5, 5, 5 for 64-512 channels
        return build_eca_model(EcaResNet, variant, pretrained, **dict(
            model_args, block=EcaBasicBlock, eca_kernel_sizes='adaptive', **kwargs))
    if attn is not None:
        model_args['block_args'] = dict(attn_layer=attn)
    return build_eca_model(Rc2020ResNet, variant, pretrained, **dict(model_args, block=BasicBlock, **kwargs))


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (1, 1), 'crop_pct': 1.0,
        'interpolation': 'bilinear', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,  # as train_cifar.py
        'first_conv': 'conv1', 'classifier': 'fc',
        'origin_url': 'https://github.com/digantamisra98/Reproducibilty-Challenge-ECANET', **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in RC2020_ATTENTION})


@register_model
def resnet18_rc2020(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """The report's ResNet-18 (torchvision's, ImageNet stem), no attention."""
    return _create('resnet18_rc2020', pretrained, **kwargs)


@register_model
def se_resnet18_rc2020(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """The report's ResNet-18 with Echo's SE (C // 16 hidden channels, biases) in every block."""
    return _create('se_resnet18_rc2020', pretrained, **kwargs)


@register_model
def cbam_resnet18_rc2020(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """The report's ResNet-18 with Echo's CBAM (biased MLP, 3x3 spatial gate) in every block."""
    return _create('cbam_resnet18_rc2020', pretrained, **kwargs)


@register_model
def eca_resnet18_rc2020(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """The report's ECA-ResNet-18: ECA with the paper's adaptive kernel sizes (3, 5, 5, 5)."""
    return _create('eca_resnet18_rc2020', pretrained, **kwargs)
