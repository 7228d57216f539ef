"""``eca-timm convert``: an official ECA-Net release file -> a verified Hub-ready folder.

The checkpoint must fit the model completely (the model family's key mapping, then a strict load); nothing is
written otherwise. The card carries the released metrics only for the file whose sha256 the manifest records.
"""
import argparse
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from torch import nn

from ..models._pretrained import hub_org, manifest_entry, repo_id
from ..models._state_dict import CheckpointMismatchError
from .card import WeightsInfo
from .checkpoint import check_model_name, file_sha256, fit_exactly, read_checkpoint, unreadable_checkpoint
from .hub_folder import check_out_dir, dataset_label_names, write_hub_folder
from .manifest import released_info

__all__ = ['check_tag', 'convert', 'convert_checkpoint', 'file_sha256', 'register', 'unreadable_checkpoint']

_logger = logging.getLogger(__name__)

MANIFEST = "eca-timm's manifest (`eca-timm models` lists its tags)"


def check_tag(model_name: str, tag: str) -> str:
    """The Hub repo id of ``<model_name>.<tag>``, or a ValueError when the tag cannot be part of one."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    repo = f'{hub_org()}/{model_name}.{tag}'  # the name the tag's repo gets (unless the manifest names one)
    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise ValueError(f"--tag {tag!r} cannot name a Hub repo ({repo}: {' '.join(str(e).split())}); use letters, "
                         f"digits, '-', '_' and '.', e.g. --tag official_in1k") from e
    return repo_id(f'{model_name}.{tag}')


def convert_checkpoint(src: Path, model_name: str, tag: str = 'official_in1k',
                       model_kwargs: Optional[Dict[str, Any]] = None, vouched: bool = False
                       ) -> Tuple[nn.Module, WeightsInfo]:
    """The verified model of an official checkpoint and what its card may say (``vouched``: ``release`` records
    the file's sha256 as the released one). A sha256 that differs from the recorded one is refused."""
    import timm
    from tqdm import tqdm

    src = Path(src)
    model_tag = f'{model_name}.{tag}'
    with tqdm(total=3, desc=f'convert {src.name}', unit='step') as steps:
        steps.set_postfix_str('read')
        checkpoint = read_checkpoint(src)
        expected = ((manifest_entry(model_tag) or {}).get('source') or {}).get('sha256')
        if expected and expected != checkpoint.sha256:
            raise CheckpointMismatchError(
                f'{src}: sha256 {checkpoint.sha256} differs from {expected} recorded for {model_tag} in {MANIFEST}; '
                f'use the released file or another --tag')
        steps.update()
        steps.set_postfix_str('fit')
        model = timm.create_model(model_name, **(model_kwargs or {}))
        fix = (f'convert takes the official ImageNet release files; publish a fine-tuned checkpoint with `eca-timm '
               f'publish {src} --model {model_name} --repo-id ORG/NAME`, which takes its classes and input channels '
               f'from the weights')
        state_dict = fit_exactly(checkpoint.state_dict(), model, src, fix)
        steps.update()
        steps.set_postfix_str('verify')
        model.load_state_dict(state_dict, strict=True)
        model.eval()
        steps.update()
    fields = released_info(model_tag, src.name, checkpoint.sha256, vouched=vouched)
    fields.setdefault('source', {'file': src.name, 'sha256': checkpoint.sha256})
    info = WeightsInfo(tag=tag, **fields)
    info.label_names = dataset_label_names((manifest_entry(model_tag) or {}).get('dataset'), model.num_classes)
    if not expected and not vouched:
        _logger.warning(f'No sha256 recorded for {model_tag} in {MANIFEST}; this file has {checkpoint.sha256}: the '
                        f'card gives the release\'s numbers as the release\'s, not this file\'s')
    return model, info


def convert(src: str, model_name: str, out: str, tag: str = 'official_in1k', force: bool = False,
            model_kwargs: Optional[Dict[str, Any]] = None) -> Path:
    """Official checkpoint -> a Hub-ready folder (model.safetensors, config.json, README.md), verified.

    The checkpoint must fit the model completely (strict load); nothing is written otherwise. The card's
    metrics, dataset and source come from the manifest entry ``<model_name>.<tag>`` when the file's sha256 is the
    recorded one.
    """
    check_model_name(model_name)
    repo = check_tag(model_name, tag)
    out_path = Path(out)
    check_out_dir(out_path, force, sources=[Path(src)])
    model, info = convert_checkpoint(Path(src), model_name, tag, model_kwargs)
    return write_hub_folder(model, out_path, repo, info, force=force)


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
    p.add_argument('--tag', default='official_in1k',
                   help="pretrained tag: the card's released metrics come from this tag in eca-timm's manifest "
                        "(`eca-timm models` lists the tags)")
    p.add_argument('--force', action='store_true', help='replace an existing --out folder')
    p.set_defaults(func=_run, interrupted_note='nothing written')
