"""``eca-timm convert``: an official ECA-Net release file -> a verified Hub-ready folder.

The checkpoint must fit the model completely (the model family's key mapping, then a strict load); nothing is
written otherwise.
"""
import argparse
import hashlib
import logging
from pathlib import Path
from typing import Any, Dict, Optional

from ..models._pretrained import manifest_entry, repo_id
from ..models._state_dict import CheckpointMismatchError, fit_state_dict
from .hub_folder import check_out_dir, dataset_label_names, write_hub_folder

__all__ = ['convert', 'file_sha256', 'register', 'unreadable_checkpoint']

_logger = logging.getLogger(__name__)


def unreadable_checkpoint(path: Path, error: BaseException) -> ValueError:
    """The error for a file that is not a readable PyTorch checkpoint (torch.load fails in many ways)."""
    return ValueError(
        f'{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}); pass a train.py output folder, '
        f'a checkpoint (.pth.tar / .pth / .safetensors) or a folder written by `eca-timm convert`')


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
    from timm.models import load_state_dict
    from tqdm import tqdm

    out = Path(out)
    check_out_dir(out, force, sources=[Path(src)])
    model_tag = f'{model_name}.{tag}'
    entry = manifest_entry(model_tag) or {}
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
        try:
            raw = load_state_dict(str(src))
        except Exception as e:  # pickle, zip, EOF, KeyError on a text file...
            raise unreadable_checkpoint(Path(src), e) from e
        state_dict = fit_state_dict(raw, model)
        steps.update()
        steps.set_postfix_str('verify')
        model.load_state_dict(state_dict, strict=True)
        model.eval()
        steps.update()
        steps.set_postfix_str('write')
        dataset = entry.get('dataset')
        folder = write_hub_folder(
            model, out, repo_id=repo_id(model_tag), tag=tag, metrics=entry.get('metrics'), dataset=dataset,
            license=entry.get('license', 'mit'), source=dict(entry.get('source', {}), file=Path(src).name, sha256=sha),
            recipe_text=entry.get('recipe'), label_names=dataset_label_names(dataset, model.num_classes),
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
    p.set_defaults(func=_run, interrupted_note='nothing written')
