"""CIFAR-style ResNet-18 with no attention, SE, CBAM or ECA: the models of the attention study's default preset.

The CIFAR stem is a 3x3 conv with stride 1 and no max-pool (He et al.'s CIFAR ResNets, as used by most CIFAR
baselines), so a 32x32 image reaches the last stage at 4x4 instead of 1x1 with ImageNet's 7x7/2 conv +
max-pool stem. Everything else is timm's ResNet-18 (basic blocks, 2-2-2-2); the attention sits at each block's
``.se`` after the last BN, before the residual add: timm's ``create_attn`` types ``'se'`` and ``'cbam'``
(reduction 1/16), and for ECA the plugin's ``EcaResNet`` (per-stage kernel sizes of the released
ECA-ResNet-18 by default, or ``eca_kernel_sizes='adaptive'`` through ``--model-kwargs``).

Registered as ``resnet18_cifar``, ``se_resnet18_cifar``, ``cbam_resnet18_cifar`` and ``eca_resnet18_cifar``
(module group ``cifar_resnet``). They are study baselines, not ECA-Net releases, so ``MODEL_MODULES`` (the
plugin's model list, ``eca-timm models``) does not include them; ``timm.list_models('*_cifar')`` lists them.
The reproducibility report's own models (ImageNet stem, its SE / CBAM / adaptive ECA) are in ``rc2020_resnet``.
"""
from typing import Any, Dict, Type

from timm.models import register_model, generate_default_cfgs
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from ._builder import RELEASED_KERNEL_SIZES, build_eca_model
from .eca_resnet import ECA_RESNET_ARCHS, RESNET_KEY_MAPPING, EcaResNet

__all__ = ['CifarResNet', 'CifarEcaResNet', 'CIFAR_ATTENTION']

# Model name -> attention in every block (None: plain ResNet-18); ECA goes through EcaResNet.
CIFAR_ATTENTION: Dict[str, Any] = {
    'resnet18_cifar': None,
    'se_resnet18_cifar': 'se',
    'cbam_resnet18_cifar': 'cbam',
    'eca_resnet18_cifar': 'eca',
}

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _use_cifar_stem(model: ResNet, in_chans: int, device: Any = None, dtype: Any = None) -> None:
    """Swap the 7x7/2 conv + max-pool stem for a 3x3/1 conv (kaiming init, as timm's ResNet)."""
    width = model.bn1.num_features
    model.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False, device=device,
                            dtype=dtype)
    nn.init.kaiming_normal_(model.conv1.weight, mode='fan_out', nonlinearity='relu')
    model.maxpool = nn.Identity()
    for info in model.feature_info:  # the stem no longer downsamples by 4
        info['reduction'] = max(1, info['reduction'] // 4)


class CifarResNet(ResNet):
    """timm's ResNet with the CIFAR stem (3x3 conv, stride 1, no max-pool). Arguments: timm's ``ResNet``."""
    checkpoint_key_mapping = RESNET_KEY_MAPPING

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _use_cifar_stem(self, kwargs.get('in_chans', 3), kwargs.get('device'), kwargs.get('dtype'))


class CifarEcaResNet(EcaResNet):
    """``EcaResNet`` with the CIFAR stem (3x3 conv, stride 1, no max-pool). Arguments: ``EcaResNet``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _use_cifar_stem(self, kwargs.get('in_chans', 3), kwargs.get('device'), kwargs.get('dtype'))


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> ResNet:
    attn = CIFAR_ATTENTION[variant]
    model_args: Dict[str, Any] = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    model_cls: Type[ResNet] = CifarResNet
    if attn == 'eca':
        model_cls = CifarEcaResNet
        model_args.update(ECA_RESNET_ARCHS['eca_resnet18'], eca_kernel_sizes=RELEASED_KERNEL_SIZES['eca_resnet18'])
    elif attn is not None:
        model_args['block_args'] = dict(attn_layer=attn)
    return build_eca_model(model_cls, variant, pretrained, **dict(model_args, **kwargs))


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (4, 4), 'crop_pct': 1.0,
        'interpolation': 'bilinear', 'mean': CIFAR10_MEAN, 'std': CIFAR10_STD,
        'first_conv': 'conv1', 'classifier': 'fc', **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in CIFAR_ATTENTION})


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with the CIFAR stem, no attention."""
    return _create('resnet18_cifar', pretrained, **kwargs)


@register_model
def se_resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with the CIFAR stem and squeeze-and-excitation (timm's SEModule) in every block."""
    return _create('se_resnet18_cifar', pretrained, **kwargs)


@register_model
def cbam_resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with the CIFAR stem and CBAM (timm's CbamModule) in every block."""
    return _create('cbam_resnet18_cifar', pretrained, **kwargs)


@register_model
def eca_resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ECA-ResNet-18 (the plugin's fused blocks, released kernel sizes) with the CIFAR stem."""
    return _create('eca_resnet18_cifar', pretrained, **kwargs)
