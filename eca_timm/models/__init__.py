"""The model families, registered with timm on import: ECA-ResNet, ECA-MobileNetV2 and the attention study's models.

timm's registry groups models by the defining module's name: ``timm.list_models(module=list(MODEL_MODULES))`` lists
the ECA-Net releases; the study's models (modules ``cifar_resnet``: the CIFAR-stem baselines, ``rc2020_resnet``: the
reproducibility report's ImageNet-stem ones) are ``STUDY_MODULES``.
"""
from . import cifar_resnet, eca_mobilenetv2, eca_resnet, rc2020_resnet  # noqa: F401  (registers the models with timm)
from ._builder import RELEASED_KERNEL_SIZES, check_kwargs, did_you_mean
from ._state_dict import CheckpointMismatchError, checkpoint_filter_fn, fit_state_dict
from .cifar_resnet import CifarEcaResNet, CifarResNet
from .eca_mobilenetv2 import EcaMobileNetV2
from .eca_resnet import EcaResNet

MODEL_MODULES = ('eca_resnet', 'eca_mobilenetv2')
STUDY_MODULES = ('cifar_resnet', 'rc2020_resnet')

__all__ = ['CheckpointMismatchError', 'CifarEcaResNet', 'CifarResNet', 'EcaMobileNetV2', 'EcaResNet', 'MODEL_MODULES',
           'RELEASED_KERNEL_SIZES', 'STUDY_MODULES', 'check_kwargs', 'checkpoint_filter_fn', 'did_you_mean',
           'fit_state_dict']
