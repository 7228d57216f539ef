"""eca-timm: the ECA-Net models (CVPR 2020) as timm models.

Importing this package registers ``eca_resnet18/34/50/101/152`` and ``eca_mobilenetv2`` with timm, and the
CIFAR-stem ResNet-18s of the attention study (``resnet18_cifar``, ``se_/cbam_/eca_resnet18_cifar``).
"""
from . import cifar_resnet, eca_mobilenetv2, eca_resnet  # noqa: F401  (registers the models with timm)
from ._build import RELEASED_KERNEL_SIZES
from .cifar_resnet import CifarEcaResNet, CifarResNet
from .eca import EcaLayer, adaptive_kernel_size
from .eca_mobilenetv2 import EcaMobileNetV2
from .eca_resnet import EcaResNet

__version__ = '0.1.0'

# timm's registry groups models by the defining module's name: timm.list_models(module=list(MODEL_MODULES)).
# The CIFAR study models (module 'cifar_resnet') are baselines, not ECA-Net releases: STUDY_MODULES.
MODEL_MODULES = ('eca_resnet', 'eca_mobilenetv2')
STUDY_MODULES = ('cifar_resnet',)

__all__ = ['CifarEcaResNet', 'CifarResNet', 'EcaLayer', 'EcaMobileNetV2', 'EcaResNet', 'MODEL_MODULES', 'STUDY_MODULES',
           'RELEASED_KERNEL_SIZES', 'adaptive_kernel_size']
