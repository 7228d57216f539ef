"""Shared parts of the model families: the per-stage kernel-size table, the pretrained cfg, and the one builder
(timm's ``build_model_with_cfg`` after the arguments are checked)."""
import difflib
import inspect
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, Union

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from torch import nn

from ..layers import adaptive_kernel_size, check_kernel_size
from ._pretrained import LOAD_ERRORS, fail_fast_offline, pretrained_load_error
from ._state_dict import checkpoint_filter_fn

__all__ = ['RELEASED_KERNEL_SIZES', 'build_eca_model', 'check_kwargs', 'did_you_mean', 'eca_cfg', 'model_arg_names',
           'resolve_stage_kernel_sizes']

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


def did_you_mean(name: str, choices: Iterable[str], n: int = 1) -> str:
    """``" (did you mean 'x'?)"`` with the (up to ``n``) choices closest to ``name``, else those starting with it;
    '' when none is close."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=n) or [c for c in choices if c.startswith(name)][:n]
    if not close:
        return ''
    *head, last = [repr(c) for c in close]
    return f" (did you mean {', '.join(head) + ' or ' if head else ''}{last}?)"


def check_kwargs(owner: str, kwargs: Iterable[str], accepted: Sequence[str]) -> None:
    """TypeError naming each keyword argument of ``owner`` that is not in ``accepted``, with the closest one."""
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        named = ', '.join(f"'{k}'{did_you_mean(k, accepted)}" for k in unknown)
        raise TypeError(f"{owner}: unknown keyword argument{'s' if len(unknown) > 1 else ''} {named}. "
                        f"Model arguments it accepts: {', '.join(sorted(accepted))}")


def model_arg_names(model_cls: Type[nn.Module]) -> List[str]:
    """Keyword arguments ``model_cls(...)`` takes: its ``__init__``'s, and its parents' while ``**kwargs`` passes on."""
    names = set()
    for cls in model_cls.__mro__:
        if cls is nn.Module or '__init__' not in vars(cls):
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return sorted(names - {'self'})


# What timm's build_model_with_cfg takes besides the model's arguments (create_model passes some of them).
_FEATURE_KWARGS = ('features_only', 'out_indices', 'feature_cls')
_BUILDER_KWARGS = sorted(set(inspect.signature(build_model_with_cfg).parameters) - {
    'model_cls', 'variant', 'pretrained', 'kwargs'}) + list(_FEATURE_KWARGS)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_count(variant: str, kwargs: Mapping[str, Any], name: str, low: int, fix: str) -> None:
    value = kwargs.get(name)
    if value is not None and not (_is_int(value) and value >= low):
        raise ValueError(f'{variant}: {name} must be an int >= {low}, got {value!r}; {fix}')


def _check_out_indices(variant: str, out_indices: Any, levels: Optional[int] = None) -> None:
    """timm's ``out_indices``: an int n (the last n levels) or level indices (negative from the end), each once and
    in increasing order, as the features come out. Without ``levels`` (before the model is built): the type only."""
    fix = (f'pass feature levels 0 to {levels - 1} (or -{levels} to -1), each once and in increasing order, e.g. '
           f'out_indices={tuple(range(1, levels))}, or an int n from 1 to {levels} for the last n levels' if levels
           else 'pass an int n for the last n feature levels, or a tuple of level indices, e.g. (1, 2, 3, 4)')
    items = list(out_indices) if isinstance(out_indices, (tuple, list)) else [out_indices]
    if not _is_int(out_indices) and not (items and all(_is_int(i) for i in items)):
        raise ValueError(f'{variant}: out_indices must be an int or a tuple of ints, got {out_indices!r}; {fix}')
    if levels is None:
        return
    if _is_int(out_indices):
        in_range = 1 <= out_indices <= levels
    else:
        in_range = all(-levels <= i < levels for i in items)
    if not in_range:
        raise ValueError(f'{variant}: out_indices={out_indices!r} is out of range (the model has {levels} feature '
                         f'levels); {fix}')
    absolute = [i % levels for i in items]
    if any(b <= a for a, b in zip(absolute, absolute[1:])):
        raise ValueError(f'{variant}: out_indices={out_indices!r} repeats a level or is out of order (levels '
                         f'{absolute}); {fix}')


def _check_args(model_cls: Type[nn.Module], variant: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse arguments timm would take silently, or only fail on at forward, before anything is built."""
    check_kwargs(variant, kwargs, model_arg_names(model_cls) + _BUILDER_KWARGS)
    _check_count(variant, kwargs, 'num_classes', 0, 'pass 0 for no classifier (features only)')
    _check_count(variant, kwargs, 'in_chans', 1, 'pass the number of input channels, e.g. 3 for RGB or 1 for gray')
    if kwargs.get('features_only'):
        if 'out_indices' in kwargs:
            _check_out_indices(variant, kwargs['out_indices'])
        return
    given = ' and '.join(k for k in ('out_indices', 'feature_cls') if k in kwargs)
    if given:
        raise ValueError(f'{variant}: {given} only work with features_only=True; pass features_only=True too, or '
                         f'leave {given} out')


def _checking_feature_levels(model_cls: Type[nn.Module], variant: str, out_indices: Any) -> Callable[..., nn.Module]:
    """``model_cls``, with ``out_indices`` checked against the built model's feature levels before timm loads
    weights or wraps the model for features."""
    def build(**kwargs: Any) -> nn.Module:
        model = model_cls(**kwargs)
        _check_out_indices(variant, out_indices, len(model.feature_info))
        return model
    return build


def build_eca_model(model_cls: Type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """``timm.models.build_model_with_cfg`` with the arguments checked first and the pretrained errors explained.

    An unknown keyword argument names the close accepted one; an out-of-range ``num_classes``, ``in_chans`` or
    ``out_indices`` is refused before weights load. Foreign checkpoints go through the family's
    ``checkpoint_filter_fn`` (pretrained ``file``, ``hf-hub:``, train.py ``--pretrained-path``); weights that cannot
    be loaded name their source and what to do.
    """
    _check_args(model_cls, variant, kwargs)
    if kwargs.get('features_only') and 'out_indices' in kwargs:
        model_cls = _checking_feature_levels(model_cls, variant, kwargs['out_indices'])
    kwargs.setdefault('pretrained_filter_fn', checkpoint_filter_fn)
    if pretrained:
        fail_fast_offline(variant, kwargs)
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except LOAD_ERRORS as e:
        if not pretrained:
            raise
        raise pretrained_load_error(variant, kwargs, e) from e
