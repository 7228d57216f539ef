"""Shared helpers of the model families: the per-stage kernel-size table and timm's model builder."""
import inspect
import re
from typing import Any, Dict, Sequence, Tuple, Type, Union

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from torch import nn

from ..layers import adaptive_kernel_size, check_kernel_size
from ._pretrained import LOAD_ERRORS, fail_fast_offline, pretrained_load_error
from ._state_dict import official_keys_hook

__all__ = ['RELEASED_KERNEL_SIZES', 'eca_cfg', 'resolve_stage_kernel_sizes', 'build_eca_model']

# The one table of ECA kernel sizes per stage, as in the released ImageNet weights (hand-picked per stage).
# ECA-MobileNetV2: 1 below 96 output channels, else 3. The official code's first commit said `c <= 96`; it was
# changed to `c < 96` (BangguWu/ECANet PR #32, 2020) because eca_mobilenetv2_k13.pth.tar did not load otherwise.
RELEASED_KERNEL_SIZES: Dict[str, Tuple[int, ...]] = {
    'eca_resnet18': (3, 5, 7, 7),
    'eca_resnet34': (3, 3, 5, 7),
    'eca_resnet50': (3, 5, 5, 7),
    'eca_resnet101': (3, 3, 5, 7),
    'eca_resnet152': (3, 3, 5, 7),
    'eca_mobilenetv2': (1, 1, 1, 1, 3, 3, 3),
}

StageKernelSizes = Union[int, str, Sequence[int]]


def resolve_stage_kernel_sizes(spec: StageKernelSizes, stage_channels: Sequence[int]) -> Tuple[int, ...]:
    """Turn ``eca_kernel_sizes`` (an odd int, one per stage, or ``'adaptive'``) into one size per stage."""
    n = len(stage_channels)
    if spec == 'adaptive':
        return tuple(adaptive_kernel_size(c) for c in stage_channels)
    if isinstance(spec, str):
        raise ValueError(
            f"eca_kernel_sizes must be an odd int, {n} odd ints (one per stage) or 'adaptive', got {spec!r}")
    if not isinstance(spec, (list, tuple)):  # an int, or a wrong scalar (3.0, True): check_kernel_size says which
        return (check_kernel_size(spec),) * n
    sizes = tuple(spec)
    if len(sizes) != n:
        raise ValueError(
            f'eca_kernel_sizes needs {n} values, one per stage, got {len(sizes)}: {sizes!r}. '
            f"Pass {n} odd ints, one odd int for all stages, or 'adaptive'.")
    return tuple(check_kernel_size(k) for k in sizes)


def eca_cfg(first_conv: str, classifier: str, **kwargs: Any) -> Dict[str, Any]:
    """Pretrained cfg of the official evaluation: resize 256, center crop 224, bilinear, ImageNet mean/std."""
    return {
        'url': '',
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': first_conv, 'classifier': classifier,
        'paper_ids': 'arXiv:1910.03151',
        'paper_name': 'ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks',
        'origin_url': 'https://github.com/BangguWu/ECANet', 'license': 'mit',
        **kwargs,
    }


def _accepted_kwargs(model_cls: Type[nn.Module]) -> list:
    names = set()
    for cls in model_cls.__mro__:
        if cls is nn.Module or '__init__' not in vars(cls):
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        names.update(p.name for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD)
    names.discard('self')
    return sorted(names)


def build_eca_model(model_cls: Type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """``timm.models.build_model_with_cfg`` with clear errors and official ECA-Net keys accepted.

    A kwarg typo names the model's valid kwargs; weights that cannot be loaded name their source and what to do.
    The model's ``load_state_dict`` also takes official ECA-Net keys (timm's ``load_checkpoint``, train.py
    ``--initial-checkpoint``); pass ``pretrained_filter_fn`` for timm's pretrained loaders.
    """
    if pretrained:
        fail_fast_offline(variant, kwargs)
    try:
        model = build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except LOAD_ERRORS as e:
        if not pretrained:
            raise
        raise pretrained_load_error(variant, kwargs, e) from e
    except TypeError as e:
        m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if m is None:
            raise
        raise TypeError(
            f"{variant}: unknown keyword argument '{m.group(1)}'. "
            f"Model arguments it accepts: {', '.join(_accepted_kwargs(model_cls))}") from e
    model.register_load_state_dict_pre_hook(official_keys_hook)
    return model
