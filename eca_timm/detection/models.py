"""Mask R-CNN, Faster R-CNN and RetinaNet with ECA-ResNet FPN backbones, built on torchvision's detectors.

The backbone is the registered timm model with ``features_only=True``; torchvision's ``BackboneWithFPN`` puts
its FPN on top. Conventions follow torchvision's ``*_resnet50_fpn`` builders: frozen batch norm and the first
stages frozen when the backbone starts from ImageNet weights, all layers trainable from random initialisation.
"""
import difflib
import inspect
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Type, Union

import timm
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _validate_trainable_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from ..models import eca_resnet  # noqa: F401  (registers the backbones with timm)

__all__ = [
    'DETECTION_MODELS', 'WeightsBackbone', 'eca_resnet_fpn_backbone', 'create_detection_model', 'detector_kwargs',
    'check_detector_kwargs',
    'maskrcnn_eca_resnet18_fpn', 'maskrcnn_eca_resnet50_fpn', 'maskrcnn_eca_resnet101_fpn',
    'fasterrcnn_eca_resnet18_fpn', 'fasterrcnn_eca_resnet50_fpn', 'fasterrcnn_eca_resnet101_fpn',
    'retinanet_eca_resnet50_fpn',
]

# None/False: random init; True: timm's pretrained weights of the backbone; a path: a checkpoint file of it.
WeightsBackbone = Union[None, bool, str, 'os.PathLike[str]']

# Backbone modules from the last stage to the stem, in the order torchvision unfreezes them.
_TRAINABLE_ORDER = ('layer4', 'layer3', 'layer2', 'layer1', 'conv1')

# Builder name -> builder: the one table the command line and ``create_detection_model`` read.
DETECTION_MODELS: Dict[str, Callable[..., nn.Module]] = {}
# Builder name -> the torchvision detector class it builds (whose keyword arguments it accepts).
_DETECTOR_CLASSES: Dict[str, Type[nn.Module]] = {}

# Where torchvision's detectors send their ``**kwargs`` (read from torchvision's source): Mask R-CNN to Faster R-CNN,
# Faster R-CNN and RetinaNet to their GeneralizedRCNNTransform, which swallows unknown ones: so a typo was ignored
# silently, and ``detector_kwargs`` follows this chain to list what each builder really takes.
_KWARGS_GO_TO: Dict[type, type] = {
    MaskRCNN: FasterRCNN, FasterRCNN: GeneralizedRCNNTransform, RetinaNet: GeneralizedRCNNTransform}
# Arguments ``_detector`` sets itself (the backbone) or handles before the detector class.
_DETECTOR_OWN = ('num_classes', 'weights_backbone', 'trainable_backbone_layers', 'frozen_bn', 'fpn_channels',
                 'backbone_kwargs')


def _is_trained(weights_backbone: WeightsBackbone) -> bool:
    return weights_backbone is not None and weights_backbone is not False


def _pretrained_args(backbone_name: str, weights_backbone: WeightsBackbone) -> Dict[str, Any]:
    """timm ``create_model`` arguments that load the backbone's ImageNet weights, or a clear error."""
    if not _is_trained(weights_backbone):
        return {}
    if weights_backbone is True:
        cfg = timm.models.get_pretrained_cfg(backbone_name)
        if cfg is None or not (cfg.url or cfg.hf_hub_id or cfg.file):
            raise RuntimeError(
                f'No ImageNet weights are registered for {backbone_name}. Pass weights_backbone=<path to a '
                f'{backbone_name} checkpoint> (.safetensors/.pth, e.g. an official ECA-Net release file), '
                f'or weights_backbone=None to start from random initialisation.')
        return dict(pretrained=True)
    path = os.fspath(weights_backbone)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'Backbone weights file {path!r} not found: pass the path of a {backbone_name} checkpoint, '
            f'weights_backbone=True for the registered ImageNet weights, or None for random initialisation.')
    return dict(pretrained=True, pretrained_cfg_overlay=dict(file=path))


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


def detector_kwargs(name: str) -> List[str]:
    """Keyword arguments the builder ``name`` accepts: its own, then those of the torchvision classes it reaches."""
    _check_name(name)
    model_cls: Optional[type] = _DETECTOR_CLASSES[name]
    names = set(_DETECTOR_OWN)
    while model_cls is not None:
        params = inspect.signature(model_cls.__init__).parameters.values()
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        has_var_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
        model_cls = _KWARGS_GO_TO.get(model_cls) if has_var_kwargs else None
    return sorted(names - {'self', 'backbone'})


def check_detector_kwargs(name: str, kwargs: Dict[str, Any]) -> None:
    """TypeError naming each unknown keyword argument (and a close accepted one), as the classification models."""
    accepted = detector_kwargs(name)
    unknown = [k for k in kwargs if k not in accepted]
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, accepted, n=1) or [a for a in accepted if a.startswith(key)][:1]
        named.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ''))
    raise TypeError(f"{name}: unknown keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(named)}. "
                    f"Model arguments it accepts: {', '.join(accepted)}")


def _detector(
        name: str,
        backbone_name: str,
        num_classes: int = 91,
        weights_backbone: WeightsBackbone = None,
        trainable_backbone_layers: Optional[int] = None,
        frozen_bn: Optional[bool] = None,
        fpn_channels: int = 256,
        backbone_kwargs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
) -> nn.Module:
    check_detector_kwargs(name, kwargs)
    model_cls = _DETECTOR_CLASSES[name]
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
        weights_backbone: None (random init), True (timm's ImageNet weights of the backbone) or a file.
        trainable_backbone_layers: Trainable backbone stages from the last (0-5); default 3 with ImageNet
            weights, 5 without (as torchvision).
        frozen_bn: Frozen batch norm in the backbone; default: when ``weights_backbone`` is set.
        fpn_channels: FPN channels (256 in the paper; fewer make tiny detectors for small data).
        backbone_kwargs: More ``timm.create_model`` arguments of the backbone (e.g. ``drop_path_rate``).
        **kwargs: Passed to torchvision's detector class (e.g. ``min_size``, ``max_size``); an argument it does
            not take is a TypeError listing those it does (``detector_kwargs``).
"""


def _register(model_cls: Type[nn.Module]) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder of ``model_cls`` under its function name, with the shared argument docs."""
    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        fn.__doc__ = (fn.__doc__ or '') + _ARGS_DOC
        DETECTION_MODELS[fn.__name__] = fn
        _DETECTOR_CLASSES[fn.__name__] = model_cls
        return fn
    return register


@_register(MaskRCNN)
def maskrcnn_eca_resnet18_fpn(**kwargs: Any) -> MaskRCNN:
    """Mask R-CNN with an ECA-ResNet-18 FPN backbone (small, for quick experiments)."""
    return _detector('maskrcnn_eca_resnet18_fpn', 'eca_resnet18', **kwargs)


@_register(MaskRCNN)
def maskrcnn_eca_resnet50_fpn(**kwargs: Any) -> MaskRCNN:
    """Mask R-CNN with an ECA-ResNet-50 FPN backbone (the paper's COCO model)."""
    return _detector('maskrcnn_eca_resnet50_fpn', 'eca_resnet50', **kwargs)


@_register(MaskRCNN)
def maskrcnn_eca_resnet101_fpn(**kwargs: Any) -> MaskRCNN:
    """Mask R-CNN with an ECA-ResNet-101 FPN backbone."""
    return _detector('maskrcnn_eca_resnet101_fpn', 'eca_resnet101', **kwargs)


@_register(FasterRCNN)
def fasterrcnn_eca_resnet18_fpn(**kwargs: Any) -> FasterRCNN:
    """Faster R-CNN with an ECA-ResNet-18 FPN backbone (small, for quick experiments)."""
    return _detector('fasterrcnn_eca_resnet18_fpn', 'eca_resnet18', **kwargs)


@_register(FasterRCNN)
def fasterrcnn_eca_resnet50_fpn(**kwargs: Any) -> FasterRCNN:
    """Faster R-CNN with an ECA-ResNet-50 FPN backbone."""
    return _detector('fasterrcnn_eca_resnet50_fpn', 'eca_resnet50', **kwargs)


@_register(FasterRCNN)
def fasterrcnn_eca_resnet101_fpn(**kwargs: Any) -> FasterRCNN:
    """Faster R-CNN with an ECA-ResNet-101 FPN backbone."""
    return _detector('fasterrcnn_eca_resnet101_fpn', 'eca_resnet101', **kwargs)


@_register(RetinaNet)
def retinanet_eca_resnet50_fpn(**kwargs: Any) -> RetinaNet:
    """RetinaNet with an ECA-ResNet-50 FPN backbone (P3-P7)."""
    return _detector('retinanet_eca_resnet50_fpn', 'eca_resnet50', **kwargs)


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
