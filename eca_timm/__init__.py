"""eca-timm: the ECA-Net models (CVPR 2020) as timm models.

Importing this package registers ``eca_resnet18/34/50/101/152`` and ``eca_mobilenetv2`` with timm, and the
ResNet-18s of the attention study: CIFAR-stem (``resnet18_cifar``, ``se_/cbam_/eca_resnet18_cifar``) and the
reproducibility report's (``resnet18_rc2020``, ``se_/cbam_/eca_resnet18_rc2020``).

Layout (docs/architecture.md): ``layers/`` -> ``models/`` -> ``weights/``, ``train/``, ``detection/``, ``bench``,
``model_table`` -> ``cli``; imports only go down.
"""
from ._version import __version__
from .layers import EcaLayer, adaptive_kernel_size
from .models import (MODEL_MODULES, RELEASED_KERNEL_SIZES, STUDY_MODULES, CifarEcaResNet, CifarResNet, EcaMobileNetV2,
                     EcaResNet)

__all__ = ['CifarEcaResNet', 'CifarResNet', 'EcaLayer', 'EcaMobileNetV2', 'EcaResNet', 'MODEL_MODULES', 'STUDY_MODULES',
           'RELEASED_KERNEL_SIZES', 'adaptive_kernel_size']
