"""The manifest's write side (``publish --record``, ``release --push``: the checkout's hub/manifest.json) and what its
released numbers let a card claim: only for the file whose sha256 it records."""
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from .._io import write_json
from .._resources import checkout_dir
from ..models._pretrained import load_manifest, manifest_entry, metrics_line
from .card import WeightsInfo, effective_recipe

__all__ = ['check_record', 'checkout_manifest', 'record_in_manifest', 'record_release', 'released_info',
           'write_manifest']


def released_info(model_tag: str, file: Optional[str], sha256: Optional[str], vouched: bool = False
                  ) -> Dict[str, Any]:
    """``WeightsInfo`` fields the manifest gives ``file`` (sha256 ``sha256``) as the weights of ``model_tag``.

    The released metrics, dataset and recipe describe one file: they go on the card (and into its model-index) only
    for the file whose sha256 the manifest records, or that ``release`` is about to record (``vouched``). A file named
    like the release file but not verified gets the release's numbers in words, as the release's, not its own.
    Any other file gets nothing from the manifest.
    """
    entry = manifest_entry(model_tag) or {}
    source = entry.get('source') or {}
    recorded = source.get('sha256')
    fields: Dict[str, Any] = {'license': entry.get('license', 'mit')}
    if vouched or (recorded and sha256 == recorded):
        fields.update(metrics=entry.get('metrics'), dataset=entry.get('dataset'), recipe_text=entry.get('recipe'),
                      source=dict(source, file=file or source.get('file'), sha256=sha256))
    elif entry.get('metrics') and file and file == source.get('file'):
        why = (f'its sha256 differs from the {recorded} recorded' if recorded else
               'no sha256 is recorded yet') + f' for {model_tag} in eca-timm\'s manifest'
        fields.update(
            results_note=(
                f"The official release reports {metrics_line(entry['metrics'])} on {entry.get('dataset', 'its data')} "
                f"for `{file}` ({entry['metrics'].get('provenance', '')}). These are the release's numbers, not this "
                f"file's: {why}, so nothing ties this file to them, and the card's metadata carries none."),
            recipe_text=f"The official release's recipe (not verified for this file): {entry['recipe']}"
            if entry.get('recipe') else None)
    return fields


def _checkout_hub() -> Optional[Path]:
    """``hub/`` of the source checkout this package runs from (None in a wheel install): the manifest's write side."""
    return checkout_dir('hub')


def checkout_manifest(option: str) -> Path:
    """The checkout's hub/manifest.json, the manifest's write side, or an error saying that ``option`` needs it."""
    hub_dir = _checkout_hub()
    path = hub_dir / 'manifest.json' if hub_dir is not None else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f'{path or "hub/manifest.json"} not found: {option} updates hub/manifest.json of an eca-timm source '
            f'checkout (git clone it and pip install -e it); an installed wheel has no manifest to edit')
    return path


def write_manifest(path: Path, manifest: Dict[str, Any]) -> None:
    """Replace the checkout's manifest (atomically); the registry reads it again at the next ``import eca_timm``."""
    write_json(path, manifest, indent=2)
    load_manifest.cache_clear()


def check_record(model: nn.Module, info: WeightsInfo) -> Tuple[Path, str, str]:
    """Manifest path, architecture and tag for ``--record``, or an error saying what is missing."""
    path = checkout_manifest('--record')
    arch, tag = model.pretrained_cfg['architecture'], info.tag
    if not tag:
        raise ValueError(f'--record needs --repo-id ORG/{arch}.<tag>, the name timm will list the weights under')
    return path, arch, tag


def record_in_manifest(repo: str, model: nn.Module, info: WeightsInfo) -> str:
    """Add (or replace) the published weights as a tag in the checkout's hub/manifest.json; returns the tag.

    The registry lists the tag (with ``hf_hub_id``) from the next import of ``eca_timm``.
    """
    path, arch, tag = check_record(model, info)
    manifest = json.loads(path.read_text(encoding='utf-8'))
    org, name = repo.split('/', 1)
    entry: Dict[str, Any] = {'repo': name if org == manifest['org'] else repo, 'published': True,
                             'license': info.license}
    if info.dataset:
        entry['dataset'] = info.dataset
    if info.source:
        entry['source'] = {k: v for k, v in info.source.items() if k in ('file', 'url', 'sha256')}
    if info.metrics:
        entry['metrics'] = info.metrics
    if info.recipe:
        entry['recipe'] = 'timm train.py: ' + ', '.join(f'{k}={v}' for k, v in effective_recipe(info.recipe).items())
    elif info.recipe_text:
        entry['recipe'] = info.recipe_text
    manifest['weights'][f'{arch}.{tag}'] = entry
    write_manifest(path, manifest)
    return f'{arch}.{tag}'


def record_release(released: List[Tuple[str, str]]) -> Path:
    """Write each released ``(tag, sha256)``'s sha256 and ``published: true`` into the checkout's hub/manifest.json."""
    path = checkout_manifest('release --push')
    manifest = json.loads(path.read_text(encoding='utf-8'))
    for tag, sha256 in released:
        entry = manifest['weights'][tag]
        entry['published'] = True
        entry.setdefault('source', {})['sha256'] = sha256
    write_manifest(path, manifest)
    return path
