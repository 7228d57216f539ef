"""Foreign checkpoints into the ECA models: the shared strict fit check, with each family's own key mapping.

timm's loaders (pretrained_cfg ``file``, ``hf-hub:``, train.py ``--pretrained-path``) pass every checkpoint through
``checkpoint_filter_fn``, which accepts

* the official ECA-Net release files (BangguWu/ECANet), renamed by the model family's ``KeyMapping``;
* plain ResNet (timm or torchvision) and torchvision MobileNetV2 ImageNet weights: everything but the ECA convs is
  mapped, the ECA convs keep their initialisation and are listed in one log line;
* this package's own state dicts (unchanged).

Anything else is refused with a ``CheckpointMismatchError`` naming the first layer that does not fit and the ECA
kernel sizes the checkpoint was trained with. This module knows no model class: a family puts its ``KeyMapping`` on
its model class as ``checkpoint_key_mapping``, as timm's families carry their own filters. A model's own
``load_state_dict`` takes its own keys only: ``eca-timm convert`` turns an official file into them.
"""
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from ..layers import EcaLayer

__all__ = ['CheckpointMatch', 'CheckpointMismatchError', 'KeyMapping', 'StateDict', 'checkpoint_filter_fn',
           'checkpoint_kernel_sizes', 'fit_state_dict', 'remap_checkpoint']

_logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model: other depth, other ECA kernel sizes, other architecture."""


class CheckpointMatch(NamedTuple):
    """What a foreign checkpoint holds, as a sentence for errors, and the registered model it fits (or None)."""
    description: str
    model: Optional[str]


@dataclass(frozen=True)
class KeyMapping:
    """How a model family reads foreign checkpoints.

    remap: official / torchvision keys -> the family's (its own keys pass unchanged).
    match: what a checkpoint holds and which registered model it fits, for errors.
    """
    remap: Callable[[StateDict], StateDict]
    match: Optional[Callable[[StateDict], CheckpointMatch]] = None


SAME_KEY_MAPPING = KeyMapping(remap=lambda state_dict: state_dict)


def _mapping(model: nn.Module) -> KeyMapping:
    return getattr(type(model), 'checkpoint_key_mapping', SAME_KEY_MAPPING)


def remap_checkpoint(state_dict: StateDict, model: nn.Module) -> StateDict:
    """Rename official ECA-Net / torchvision keys to ``model``'s (its family's ``KeyMapping``); DataParallel and
    torch.compile prefixes are stripped (timm's ``clean_state_dict``)."""
    from timm.models import clean_state_dict
    return _mapping(model).remap(clean_state_dict(state_dict))


def _eca_keys(model: nn.Module) -> List[str]:
    return [f'{name}.conv.weight' for name, m in model.named_modules() if isinstance(m, EcaLayer)]


def _stage_of(eca_key: str) -> str:
    """``layer2.0.se.conv.weight`` -> ``layer2``, ``blocks.4.1.eca.conv.weight`` -> ``blocks.4``."""
    return eca_key.rsplit('.', 4)[0]


def checkpoint_kernel_sizes(state_dict: StateDict, model: nn.Module) -> Tuple[int, ...]:
    """ECA kernel size per stage of ``model`` found in a (remapped) checkpoint; empty if it has no ECA."""
    sizes: Dict[str, int] = {}
    for k in _eca_keys(model):
        if k in state_dict:
            sizes.setdefault(_stage_of(k), int(state_dict[k].shape[-1]))
    if len(sizes) != len({_stage_of(k) for k in _eca_keys(model)}):
        return ()
    return tuple(sizes.values())


def _fit_error(model: nn.Module, state_dict: StateDict, layer: str, problem: str) -> CheckpointMismatchError:
    """The error for the first layer that does not fit, with the model and kernel sizes that would."""
    name = getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__
    msg = f'{name}: the checkpoint does not fit at layer {layer!r}: {problem}.'
    fits: Optional[str] = name
    match = _mapping(model).match
    if match is not None:
        found = match(state_dict)
        msg += f' {found.description}'
        fits = found.model
    ks = checkpoint_kernel_sizes(state_dict, model)
    if ks:
        msg += f' Its ECA kernel sizes per stage are {ks} (this model: {tuple(model.eca_kernel_sizes)}).'
    if fits and (fits != name or (ks and ks != tuple(model.eca_kernel_sizes))):
        msg += f" It fits timm.create_model('{fits}'" + (f', eca_kernel_sizes={ks})' if ks else ')') + '.'
    return CheckpointMismatchError(msg)


def _fit_to_model(state_dict: StateDict, model: nn.Module, allow_missing_eca: bool) -> StateDict:
    """Check a remapped checkpoint against ``model``; optionally fill absent ECA convs with the model's init."""
    target = model.state_dict()
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    # timm adapts the classifier (num_classes) and the first conv (in_chans) after the filter.
    adapted = {f'{m}.{p}' for m in (cfg.get('classifier'), cfg.get('first_conv')) if m for p in ('weight', 'bias')}
    eca_keys = _eca_keys(model)
    no_eca = bool(eca_keys) and not any(k in state_dict for k in eca_keys)  # models without ECA: plain check
    if no_eca and any(k.endswith('.conv.weight') and ('.eca.' in k or '.se.' in k) for k in state_dict):
        raise _fit_error(model, state_dict, eca_keys[0], "the checkpoint's ECA weights sit where this architecture "
                         "has none (another model family? an ECA-ResNet file needs --model eca_resnet<depth>)")
    if no_eca and not allow_missing_eca:
        raise _fit_error(model, state_dict, eca_keys[0], 'the checkpoint has no ECA weights (a plain ResNet / '
                         'MobileNetV2?); start from it with pretrained_cfg_overlay=dict(file=...) or train.py '
                         '--pretrained-path instead, which keep the ECA initialisation')
    for k, v in target.items():
        if k not in state_dict:
            if k in adapted or (no_eca and k in eca_keys):
                continue
            raise _fit_error(model, state_dict, k.rpartition('.')[0], f'{k} is missing from the checkpoint')
        if k not in adapted and tuple(state_dict[k].shape) != tuple(v.shape):
            raise _fit_error(model, state_dict, k.rpartition('.')[0],
                             f'{k} has shape {list(state_dict[k].shape)} in the checkpoint, '
                             f'{list(v.shape)} in the model')
    extra = [k for k in state_dict if k not in target]
    if extra:
        raise _fit_error(
            model, state_dict, extra[0].rpartition('.')[0], f'{extra[0]} is in the checkpoint, not in the model')
    if no_eca:
        _logger.info(
            f'ECA convs not in the checkpoint keep their initialisation ({len(eca_keys)}): {", ".join(eca_keys)}')
        state_dict = dict(state_dict, **{k: target[k] for k in eca_keys})
    return state_dict


def fit_state_dict(state_dict: StateDict, model: nn.Module, allow_missing_eca: bool = False) -> StateDict:
    """Remap a foreign state dict to ``model``'s keys and check that it fits, else raise CheckpointMismatchError.

    ``allow_missing_eca``: accept a checkpoint without any ECA weights (plain ResNet / MobileNetV2); the ECA
    convs keep the model's initialisation.
    """
    return _fit_to_model(remap_checkpoint(state_dict, model), model, allow_missing_eca)


def checkpoint_filter_fn(state_dict: StateDict, model: nn.Module) -> StateDict:
    """timm ``pretrained_filter_fn``: official ECA-Net, plain ResNet/MobileNetV2 or own checkpoints -> ``model``."""
    return fit_state_dict(state_dict, model, allow_missing_eca=True)
