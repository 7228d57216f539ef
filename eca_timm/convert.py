"""Foreign checkpoints into the ECA models, and ``eca-timm convert``.

``checkpoint_filter_fn`` is the models' ``pretrained_filter_fn``: timm's loaders (pretrained_cfg ``file``,
``hf-hub:``, train.py ``--pretrained-path``) pass every checkpoint through it. It accepts

* the official ECA-Net release files (BangguWu/ECANet): ResNet keys are torchvision's with ``.eca.`` for
  timm's ``.se.``; MobileNetV2 keys are torchvision's ``features.N.conv.M`` layout plus the ECA conv;
* plain ResNet (timm or torchvision) and torchvision MobileNetV2 ImageNet weights: everything but the ECA
  convs is mapped, the ECA convs keep their initialisation and are listed in one log line;
* this package's own state dicts (unchanged).

Anything else is refused with a ``CheckpointMismatchError`` naming the first layer that does not fit and
the ECA kernel sizes the checkpoint was trained with.
"""
import argparse
import hashlib
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .eca import EcaLayer

__all__ = ['CheckpointMismatchError', 'checkpoint_filter_fn', 'fit_state_dict', 'official_keys_hook',
           'remap_official_keys', 'load_foreign_state_dict',
           'checkpoint_kernel_sizes', 'file_sha256', 'register']

_logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model: other depth, other ECA kernel sizes, other architecture."""


def _mobilenetv2_prefixes(model: nn.Module) -> Dict[str, str]:
    """Official/torchvision MobileNetV2 module prefixes -> this package's, from the model's own stages."""
    n_blocks = sum(len(stage) for stage in model.blocks)
    prefixes = {
        'features.0.0.': 'conv_stem.', 'features.0.1.': 'bn1.',
        f'features.{n_blocks + 1}.0.': 'conv_head.', f'features.{n_blocks + 1}.1.': 'bn2.',
        'classifier.1.': 'classifier.',
    }
    idx = 1
    for s, stage in enumerate(model.blocks):
        for i, block in enumerate(stage):
            if isinstance(block.conv_pw, nn.Identity):  # t=1: dw ConvBNReLU, pw-linear conv, bn, eca
                pairs = (('0.0', 'conv_dw'), ('0.1', 'bn2'), ('1', 'conv_pwl'), ('2', 'bn3'), ('3', 'eca'))
            else:  # pw ConvBNReLU, dw ConvBNReLU, pw-linear conv, bn, eca
                pairs = (('0.0', 'conv_pw'), ('0.1', 'bn1'), ('1.0', 'conv_dw'), ('1.1', 'bn2'),
                         ('2', 'conv_pwl'), ('3', 'bn3'), ('4', 'eca'))
            prefixes.update({f'features.{idx}.conv.{src}.': f'blocks.{s}.{i}.{dst}.' for src, dst in pairs})
            idx += 1
    return prefixes


def _is_mobilenetv2(model: nn.Module) -> bool:
    from .eca_mobilenetv2 import EcaMobileNetV2
    return isinstance(model, EcaMobileNetV2)


def remap_official_keys(state_dict: StateDict, model: nn.Module) -> StateDict:
    """Rename official ECA-Net / torchvision keys to ``model``'s; this package's own keys pass unchanged.

    DataParallel / torch.compile prefixes are stripped (timm's ``clean_state_dict``).
    """
    from timm.models import clean_state_dict
    state_dict = clean_state_dict(state_dict)
    if _is_mobilenetv2(model):
        if not any(k.startswith('features.') for k in state_dict):
            return state_dict
        prefixes = _mobilenetv2_prefixes(model)
        out = {}
        for k, v in state_dict.items():
            head = k
            while head and head + '.' not in prefixes:  # longest module prefix that maps
                head = head.rpartition('.')[0]
            out[prefixes[head + '.'] + k[len(head) + 1:] if head else k] = v
        return out
    return {k.replace('.eca.', '.se.'): v for k, v in state_dict.items()}


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


def _resnet_depth(state_dict: StateDict) -> Tuple[List[int], str, Optional[str]]:
    """Blocks per stage, block type and the registered ECA-ResNet of that depth (None if there is none)."""
    from .eca_resnet import ECA_RESNET_ARCHS
    blocks = []
    for stage in range(1, 5):
        ids = {int(k.split('.')[1]) for k in state_dict if k.startswith(f'layer{stage}.') and k.split('.')[1].isdigit()}
        blocks.append(max(ids) + 1 if ids else 0)
    bottleneck = any(k.endswith('.conv3.weight') for k in state_dict)
    match = next((name for name, arch in ECA_RESNET_ARCHS.items()
                  if tuple(arch['layers']) == tuple(blocks) and (arch['block'].expansion == 4) == bottleneck), None)
    return blocks, 'bottleneck' if bottleneck else 'basic', match


def _fit_error(model: nn.Module, state_dict: StateDict, layer: str, problem: str) -> CheckpointMismatchError:
    """The error for the first layer that does not fit, with the model and kernel sizes that would."""
    name = getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__
    msg = f'{name}: the checkpoint does not fit at layer {layer!r}: {problem}.'
    fits = name
    if not _is_mobilenetv2(model):
        blocks, kind, match = _resnet_depth(state_dict)
        msg += f' The checkpoint has {blocks} {kind} blocks per stage ({match or "no registered ECA-ResNet has that"}).'
        fits = match
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
    return _fit_to_model(remap_official_keys(state_dict, model), model, allow_missing_eca)


def checkpoint_filter_fn(state_dict: StateDict, model: nn.Module) -> StateDict:
    """timm ``pretrained_filter_fn``: official ECA-Net, plain ResNet/MobileNetV2 or own checkpoints -> ``model``."""
    return fit_state_dict(state_dict, model, allow_missing_eca=True)


def official_keys_hook(module: nn.Module, state_dict: StateDict, prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: official keys are renamed in place (timm's ``load_checkpoint``, train.py
    ``--initial-checkpoint``), so an official file loads like the package's own."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    sub = remap_official_keys({k[len(prefix):]: state_dict.pop(k) for k in keys}, module)
    state_dict.update({prefix + k: v for k, v in sub.items()})


def load_foreign_state_dict(path: str, model: nn.Module, use_ema: bool = True) -> StateDict:
    """Read a checkpoint file with timm's loader (wrapper dicts, EMA preference) and fit it to ``model`` (all of it)."""
    from timm.models import load_state_dict
    return fit_state_dict(load_state_dict(str(path), use_ema=use_ema), model)


def file_sha256(path: str) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def convert(src: str, model_name: str, out: str, tag: str = 'official_in1k', force: bool = False,
            model_kwargs: Optional[Dict[str, Any]] = None) -> Path:
    """Official checkpoint -> a Hub-ready folder (model.safetensors, config.json, README.md), verified.

    The checkpoint must fit the model completely (strict load); nothing is written otherwise. The card's
    metrics, dataset and source come from the manifest entry ``<model_name>.<tag>``.
    """
    import timm
    from tqdm import tqdm
    from . import hub

    out = Path(out)
    hub.check_out_dir(out, force)
    model_tag = f'{model_name}.{tag}'
    entry = hub.manifest_entry(model_tag) or {}
    with tqdm(total=4, desc=f'convert {Path(src).name}', unit='step') as steps:
        steps.set_postfix_str('sha256')
        sha = file_sha256(src)
        expected = entry.get('source', {}).get('sha256')
        if expected and expected != sha:
            raise CheckpointMismatchError(
                f'{src}: sha256 {sha} differs from {expected} recorded for {model_tag} in hub/manifest.json; '
                f'use the released file or another --tag')
        steps.update()
        steps.set_postfix_str('load')
        model = timm.create_model(model_name, **(model_kwargs or {}))
        state_dict = load_foreign_state_dict(src, model)
        steps.update()
        steps.set_postfix_str('verify')
        model.load_state_dict(state_dict, strict=True)
        model.eval()
        steps.update()
        steps.set_postfix_str('write')
        dataset = entry.get('dataset')
        folder = hub.write_hub_folder(
            model, out, repo_id=hub.repo_id(model_tag), tag=tag, metrics=entry.get('metrics'), dataset=dataset,
            license=entry.get('license', 'mit'), source=dict(entry.get('source', {}), file=Path(src).name, sha256=sha),
            recipe_text=entry.get('recipe'), label_names=hub.dataset_label_names(dataset, model.num_classes),
            force=force)
        steps.update()
    if not expected:
        _logger.warning(f'No sha256 recorded for {model_tag} in hub/manifest.json; this file has {sha}')
    return folder


def _run(args: argparse.Namespace) -> int:
    folder = convert(args.src, args.model, args.out, tag=args.tag, force=args.force)
    print(f'wrote {folder}: {", ".join(sorted(p.name for p in folder.iterdir()))}')
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'convert', help='official ECA-Net checkpoint -> verified Hub-ready folder (safetensors, config, card)')
    p.add_argument('src', help='checkpoint file, e.g. eca_resnet50_k3557.pth.tar')
    p.add_argument('--model', required=True, help='registered model name, e.g. eca_resnet50')
    p.add_argument('--out', required=True, help='folder to write (must not exist unless --force)')
    p.add_argument('--tag', default='official_in1k', help='pretrained tag; metrics come from hub/manifest.json')
    p.add_argument('--force', action='store_true', help='replace an existing --out folder')
    p.set_defaults(func=_run)
