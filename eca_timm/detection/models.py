"""Mask R-CNN, Faster R-CNN and RetinaNet with ECA-ResNet FPN backbones, built on torchvision's detectors.

The backbone is the registered timm model with ``features_only=True``; torchvision's ``BackboneWithFPN`` puts
its FPN on top. Conventions follow torchvision's ``*_resnet50_fpn`` builders: frozen batch norm and the first
stages frozen when the backbone starts from ImageNet weights, all layers trainable from random initialisation.
"""
import argparse
import inspect
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _validate_trainable_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from ..models import check_kwargs, eca_resnet  # noqa: F401  (eca_resnet registers the backbones with timm)
from ..models._pretrained import manifest_entry

__all__ = [
    'DETECTION_MODELS', 'WeightsBackbone', 'eca_resnet_fpn_backbone', 'create_detection_model', 'detector_kwargs',
    'check_detector_kwargs', 'check_weights_backbone',
    'maskrcnn_eca_resnet18_fpn', 'maskrcnn_eca_resnet50_fpn', 'maskrcnn_eca_resnet101_fpn',
    'fasterrcnn_eca_resnet18_fpn', 'fasterrcnn_eca_resnet50_fpn', 'fasterrcnn_eca_resnet101_fpn',
    'retinanet_eca_resnet50_fpn',
]

# None/False: random init; True: timm's pretrained weights of the backbone; a path: a checkpoint file of it, or a
# folder written by `eca-timm convert` (the weights file in it).
WeightsBackbone = Union[None, bool, str, 'os.PathLike[str]']
_FOLDER_WEIGHTS = ('model.safetensors', 'pytorch_model.bin')  # in a converted folder, as timm's local-dir: reads it

# Backbone modules from the last stage to the stem, in the order torchvision unfreezes them.
_TRAINABLE_ORDER = ('layer4', 'layer3', 'layer2', 'layer1', 'conv1')

# Builder name -> builder: the one table the command line and ``create_detection_model`` read.
DETECTION_MODELS: Dict[str, Callable[..., nn.Module]] = {}
# Builder name -> the torchvision detector class it builds (whose keyword arguments it accepts), and its backbone.
_DETECTOR_CLASSES: Dict[str, Type[nn.Module]] = {}
_BACKBONES: Dict[str, str] = {}

# Where torchvision's detectors send their ``**kwargs`` (read from torchvision's source): Mask R-CNN to Faster R-CNN,
# Faster R-CNN and RetinaNet to their GeneralizedRCNNTransform, which swallows unknown ones: so a typo was ignored
# silently, and ``detector_kwargs`` follows this chain to list what each builder really takes.
_KWARGS_GO_TO: Dict[type, type] = {
    MaskRCNN: FasterRCNN, FasterRCNN: GeneralizedRCNNTransform, RetinaNet: GeneralizedRCNNTransform}
# Types of the builders' own arguments whose default (None) does not tell them.
_OWN_TYPES: Dict[str, Tuple[type, str]] = dict(
    frozen_bn=(bool, 'True, False or None'), backbone_kwargs=(dict, 'a dict'),
    trainable_backbone_layers=(int, 'an int in [0, 5] or None'))


def _is_trained(weights_backbone: WeightsBackbone) -> bool:
    return weights_backbone is not None and weights_backbone is not False


def _release_source(backbone_name: str) -> Dict[str, Any]:
    """The manifest's source (official release file and where it is) of the backbone's default ImageNet tag."""
    cfg = timm.models.get_pretrained_cfg(backbone_name)
    entry = manifest_entry(f'{backbone_name}.{cfg.tag}') if cfg is not None and cfg.tag else None
    return (entry or {}).get('source') or {}


def _weights_file(backbone_name: str, weights_backbone: WeightsBackbone) -> Optional[str]:
    """The checkpoint file ``weights_backbone`` names (None for timm's registered weights), checked before any work:
    True while no weights are registered, a missing file, a folder without weights are each a clear error."""
    if weights_backbone is True:
        cfg = timm.models.get_pretrained_cfg(backbone_name)
        if cfg is not None and (cfg.url or cfg.hf_hub_id or cfg.file):
            return None
        source = _release_source(backbone_name)
        if source.get('file'):  # a manifest tag not published yet
            raise ValueError(
                f"{backbone_name}: timm's ImageNet weights of it ({backbone_name}.{cfg.tag}) are not on the Hugging "
                f"Face Hub yet: pass the official release file instead, weights_backbone='{source['file']}' (from "
                f"{source.get('url', 'its release page')}; --weights-backbone on the command line), or a folder "
                f"written by `eca-timm convert` from it, or None for random initialisation")
        raise ValueError(f'{backbone_name}: no ImageNet weights are registered for it: pass weights_backbone=<a '
                         f'{backbone_name} checkpoint file, or a folder written by `eca-timm convert`>, or None for '
                         f'random initialisation')
    if not isinstance(weights_backbone, (str, os.PathLike)):
        raise TypeError(f'weights_backbone must be None, True, a checkpoint file or a folder written by `eca-timm '
                        f'convert`, got {weights_backbone!r}')
    path = os.fspath(weights_backbone)
    if os.path.isdir(path):
        files = [os.path.join(path, name) for name in _FOLDER_WEIGHTS if os.path.isfile(os.path.join(path, name))]
        if not files:
            raise FileNotFoundError(
                f"Backbone weights folder {path!r} holds no {' or '.join(_FOLDER_WEIGHTS)}: pass a folder written by "
                f"`eca-timm convert`, or a checkpoint file of {backbone_name}")
        return files[0]
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'Backbone weights file {path!r} not found: pass the path of a {backbone_name} checkpoint or of a '
            f'folder written by `eca-timm convert`, or None for random initialisation')
    return path


def _pretrained_args(backbone_name: str, weights_backbone: WeightsBackbone) -> Dict[str, Any]:
    """timm ``create_model`` arguments that load the backbone's ImageNet weights, or a clear error.

    A file is read here, with timm's loader, so that any file that is not a checkpoint is named in one error.
    """
    if not _is_trained(weights_backbone):
        return {}
    path = _weights_file(backbone_name, weights_backbone)
    if path is None:
        return dict(pretrained=True)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # train.py saves its args in checkpoints
            state_dict = timm.models.load_state_dict(path)
    except Exception as e:  # pickle, zip, safetensors, EOF, KeyError on a text file... (the cause under --debug)
        release = _release_source(backbone_name).get('file')
        example = f' (e.g. the release file {release})' if release else ''
        raise ValueError(
            f"Backbone weights file {path!r} is not a readable checkpoint ({type(e).__name__}): pass a .pth / "
            f".pth.tar / .safetensors file of {backbone_name}{example}, or a folder written by `eca-timm convert`") \
            from e
    return dict(pretrained=True, pretrained_cfg_overlay=dict(state_dict=state_dict))


def check_weights_backbone(name: str, weights_backbone: WeightsBackbone) -> None:
    """Refuse, before any work, ``weights_backbone`` values the builder ``name`` could not load (the file itself is
    read when the model is built)."""
    _check_name(name)
    if _is_trained(weights_backbone):
        _weights_file(_BACKBONES[name], weights_backbone)


def eca_resnet_fpn_backbone(
        backbone_name: str,
        *,
        weights_backbone: WeightsBackbone = None,
        trainable_layers: int = 3,
        frozen_bn: Optional[bool] = None,
        returned_layers: Optional[Sequence[int]] = None,
        extra_blocks: Optional[ExtraFPNBlock] = None,
        out_channels: int = 256,
        backbone_kwargs: Optional[Dict[str, Any]] = None,
) -> BackboneWithFPN:
    """An ECA-ResNet (timm ``features_only``) with torchvision's FPN on top.

    Args:
        backbone_name: A registered ECA-ResNet, e.g. ``'eca_resnet50'``.
        weights_backbone: None (random init), True (timm's pretrained weights) or a checkpoint file.
        trainable_layers: Trainable stages counted from the last (0-5, 5 = stem included), as torchvision.
        frozen_bn: Replace batch norm by ``FrozenBatchNorm2d`` (default: when ``weights_backbone`` is set).
        returned_layers: Stages (1-4) feeding the FPN, default all four (strides 4, 8, 16, 32).
        extra_blocks: Extra FPN levels, default ``LastLevelMaxPool`` (the stride-64 'pool' level).
        out_channels: FPN channels.
        backbone_kwargs: More ``timm.create_model`` arguments of the backbone (e.g. ``drop_path_rate``).
    """
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f'trainable_layers must be in [0, 5], got {trainable_layers}')
    returned_layers = tuple(returned_layers or (1, 2, 3, 4))
    if min(returned_layers) < 1 or max(returned_layers) > 4:
        raise ValueError(f'returned_layers must be stages in [1, 4], got {returned_layers}')
    backbone = timm.create_model(
        backbone_name, features_only=True, out_indices=returned_layers,
        **_pretrained_args(backbone_name, weights_backbone), **(backbone_kwargs or {}))
    if _is_trained(weights_backbone) if frozen_bn is None else frozen_bn:
        backbone = freeze_batch_norm_2d(backbone)  # after loading: the frozen statistics are the pretrained ones

    layers_to_train = _TRAINABLE_ORDER[:trainable_layers] + (('bn1',) if trainable_layers == 5 else ())
    for name, param in backbone.named_parameters():
        if not name.startswith(tuple(f'{layer}.' for layer in layers_to_train)):
            param.requires_grad_(False)

    # timm's feature model runs its children in order, as torchvision's IntermediateLayerGetter needs.
    return_layers = {name: str(i) for i, name in enumerate(backbone.feature_info.module_name())}
    return BackboneWithFPN(
        backbone, return_layers, backbone.feature_info.channels(), out_channels,
        extra_blocks=extra_blocks or LastLevelMaxPool())


def _parameters(name: str) -> List[inspect.Parameter]:
    """Keyword parameters of the builder ``name``: its own, then those of the torchvision classes it reaches."""
    _check_name(name)
    params = list(inspect.signature(_detector).parameters.values())[1:]  # after ``name``
    model_cls: Optional[type] = _DETECTOR_CLASSES[name]
    while model_cls is not None:
        cls_params = list(inspect.signature(model_cls.__init__).parameters.values())
        params += cls_params
        has_var_kwargs = any(p.kind is p.VAR_KEYWORD for p in cls_params)
        model_cls = _KWARGS_GO_TO.get(model_cls) if has_var_kwargs else None
    return [p for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ('self', 'backbone')]


def detector_kwargs(name: str) -> List[str]:
    """Keyword arguments the builder ``name`` accepts: its own, then those of the torchvision classes it reaches."""
    return sorted({p.name for p in _parameters(name)})


def _value_problem(key: str, value: Any, default: Any) -> Optional[Tuple[Type[Exception], str]]:
    """What is wrong with ``value`` for a parameter of this default, by torchvision's conventions: int parameters
    count something (>= 1; ``min_size`` may be a tuple of training sizes), float ones are thresholds or fractions."""
    if key in _OWN_TYPES:
        kind, what = _OWN_TYPES[key]
        ok = value is None or (type(value) is kind if kind is not dict else isinstance(value, dict))
        return None if ok else (TypeError, f'{key} must be {what}, got {value!r} ({type(value).__name__})')
    if type(default) is int:
        values = value if key == 'min_size' and isinstance(value, (list, tuple)) else [value]
        what = 'an int >= 1' + (' or a tuple of them' if key == 'min_size' else '')
        if not values or any(type(v) is not int for v in values):
            return TypeError, f'{key} must be {what}, got {value!r} ({type(value).__name__})'
        return None if min(values) >= 1 else (ValueError, f'{key} must be {what}, got {value!r}')
    if type(default) is float:
        if type(value) not in (int, float):
            return TypeError, f'{key} must be a number in [0, 1], got {value!r} ({type(value).__name__})'
        return None if 0 <= value <= 1 else (ValueError, f'{key} must be a number in [0, 1], got {value!r}')
    return None


def check_detector_kwargs(name: str, kwargs: Dict[str, Any]) -> None:
    """Refuse unknown keyword arguments (TypeError naming a close accepted one, as the classification models), then
    values of the wrong type (TypeError) or range (ValueError), all named in one message."""
    check_kwargs(name, kwargs, detector_kwargs(name))
    defaults: Dict[str, Any] = {}
    for p in _parameters(name):
        defaults.setdefault(p.name, p.default)  # the builder's own default first (num_classes=91)
    problems = [problem for problem in (_value_problem(k, v, defaults[k]) for k, v in kwargs.items()) if problem]
    if problems:
        error = TypeError if any(kind is TypeError for kind, _ in problems) else ValueError
        raise error(f"{name}: {'; '.join(text for _, text in problems)}")


def _detector(
        name: str,
        num_classes: int = 91,
        weights_backbone: WeightsBackbone = None,
        trainable_backbone_layers: Optional[int] = None,
        frozen_bn: Optional[bool] = None,
        fpn_channels: int = 256,
        backbone_kwargs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
) -> nn.Module:
    check_detector_kwargs(name, dict(
        num_classes=num_classes, trainable_backbone_layers=trainable_backbone_layers, frozen_bn=frozen_bn,
        fpn_channels=fpn_channels, backbone_kwargs=backbone_kwargs, **kwargs))
    model_cls, backbone_name = _DETECTOR_CLASSES[name], _BACKBONES[name]
    trainable = _validate_trainable_layers(_is_trained(weights_backbone), trainable_backbone_layers, 5, 3)
    if model_cls is RetinaNet:  # P3-P7, P6 from C5 as in the paper's (mmdetection) RetinaNet
        channels = timm.create_model(
            backbone_name, features_only=True, device='meta', **(backbone_kwargs or {})).feature_info.channels()
        fpn_args = dict(returned_layers=(2, 3, 4), extra_blocks=LastLevelP6P7(channels[-1], fpn_channels))
    else:
        fpn_args = {}
    backbone = eca_resnet_fpn_backbone(
        backbone_name, weights_backbone=weights_backbone, trainable_layers=trainable, frozen_bn=frozen_bn,
        out_channels=fpn_channels, backbone_kwargs=backbone_kwargs, **fpn_args)
    return model_cls(backbone, num_classes=num_classes, **kwargs)


_ARGS_DOC = """
    Args:
        num_classes: Output classes including background (91 = COCO category ids 1-90).
        weights_backbone: None (random init), True (timm's ImageNet weights of the backbone, once published on
            the Hub), a checkpoint file (e.g. the official release file) or a folder written by `eca-timm convert`.
        trainable_backbone_layers: Trainable backbone stages from the last (0-5); default 3 with ImageNet
            weights, 5 without (as torchvision).
        frozen_bn: Frozen batch norm in the backbone; default: when ``weights_backbone`` is set.
        fpn_channels: FPN channels (256 in the paper; fewer make tiny detectors for small data).
        backbone_kwargs: More ``timm.create_model`` arguments of the backbone (e.g. ``drop_path_rate``).
        **kwargs: Passed to torchvision's detector class (e.g. ``min_size``, ``max_size``); an argument it does
            not take is a TypeError listing those it does (``detector_kwargs``).
"""


def _register(model_cls: Type[nn.Module], backbone_name: str
              ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder of ``model_cls`` on ``backbone_name`` under its function name, with the shared docs."""
    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        fn.__doc__ = (fn.__doc__ or '') + _ARGS_DOC
        DETECTION_MODELS[fn.__name__] = fn
        _DETECTOR_CLASSES[fn.__name__] = model_cls
        _BACKBONES[fn.__name__] = backbone_name
        return fn
    return register


@_register(MaskRCNN, 'eca_resnet18')
def maskrcnn_eca_resnet18_fpn(**kwargs: Any) -> MaskRCNN:
    """Mask R-CNN with an ECA-ResNet-18 FPN backbone (small, for quick experiments)."""
    return _detector('maskrcnn_eca_resnet18_fpn', **kwargs)


@_register(MaskRCNN, 'eca_resnet50')
def maskrcnn_eca_resnet50_fpn(**kwargs: Any) -> MaskRCNN:
    """Mask R-CNN with an ECA-ResNet-50 FPN backbone (the paper's COCO model)."""
    return _detector('maskrcnn_eca_resnet50_fpn', **kwargs)


@_register(MaskRCNN, 'eca_resnet101')
def maskrcnn_eca_resnet101_fpn(**kwargs: Any) -> MaskRCNN:
    """Mask R-CNN with an ECA-ResNet-101 FPN backbone."""
    return _detector('maskrcnn_eca_resnet101_fpn', **kwargs)


@_register(FasterRCNN, 'eca_resnet18')
def fasterrcnn_eca_resnet18_fpn(**kwargs: Any) -> FasterRCNN:
    """Faster R-CNN with an ECA-ResNet-18 FPN backbone (small, for quick experiments)."""
    return _detector('fasterrcnn_eca_resnet18_fpn', **kwargs)


@_register(FasterRCNN, 'eca_resnet50')
def fasterrcnn_eca_resnet50_fpn(**kwargs: Any) -> FasterRCNN:
    """Faster R-CNN with an ECA-ResNet-50 FPN backbone."""
    return _detector('fasterrcnn_eca_resnet50_fpn', **kwargs)


@_register(FasterRCNN, 'eca_resnet101')
def fasterrcnn_eca_resnet101_fpn(**kwargs: Any) -> FasterRCNN:
    """Faster R-CNN with an ECA-ResNet-101 FPN backbone."""
    return _detector('fasterrcnn_eca_resnet101_fpn', **kwargs)


@_register(RetinaNet, 'eca_resnet50')
def retinanet_eca_resnet50_fpn(**kwargs: Any) -> RetinaNet:
    """RetinaNet with an ECA-ResNet-50 FPN backbone (P3-P7)."""
    return _detector('retinanet_eca_resnet50_fpn', **kwargs)


def _check_name(name: str) -> None:
    if name not in DETECTION_MODELS:
        raise ValueError(f"Unknown detection model {name!r}; choose one of: {', '.join(DETECTION_MODELS)}")


def create_detection_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a detector of ``DETECTION_MODELS`` by name."""
    _check_name(name)
    return DETECTION_MODELS[name](**kwargs)


def detection_model_names() -> List[str]:
    """Names of the detection builders."""
    return list(DETECTION_MODELS)
