"""Hub-ready folders (model.safetensors, timm's config.json, README.md) and the write side of the manifest."""
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from torch import nn

from .._io import atomic_dir, atomic_write
from .._resources import checkout_dir
from ..models._pretrained import load_manifest, metrics_line
from .card import effective_recipe, render_model_card

__all__ = ['check_out_dir', 'checkout_manifest', 'dataset_label_names', 'record_in_manifest', 'write_hub_folder',
           'write_manifest']


def check_out_dir(out: Path, force: bool, sources: Iterable[Path] = ()) -> None:
    """Refuse an ``--out`` that is the working directory or holds a source, and an existing one unless forced.

    With ``force`` only the files the command writes are replaced (``write_hub_folder``); nothing else is deleted.
    """
    out = Path(out)
    where = out.resolve()
    if where == Path.cwd().resolve():
        raise ValueError(f'--out {out} is the working directory: pass a folder of its own for the Hub files, '
                         f'e.g. --out hub/NAME')
    for src in sources:
        src = Path(src).resolve()
        if src == where or where in src.parents:
            raise ValueError(f'--out {out} holds the source {src}: pass a separate folder for the Hub files')
    if out.exists() and not out.is_dir():
        raise FileExistsError(f'--out {out} is a file: pass a folder')
    if out.exists() and not force:
        raise FileExistsError(f'{out} exists; pass --force to replace the files this command writes in it')


def write_hub_folder(
        model: nn.Module,
        out: Path,
        repo_id: str,
        tag: Optional[str] = None,
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        license: str = 'mit',
        source: Optional[Dict[str, Any]] = None,
        recipe: Optional[Dict[str, Any]] = None,
        recipe_text: Optional[str] = None,
        results_note: Optional[str] = None,
        label_names: Optional[List[str]] = None,
        data_config: Optional[Dict[str, Any]] = None,
        base_model: Optional[str] = None,
        force: bool = False,
) -> Path:
    """Write model.safetensors, timm's config.json and README.md to ``out`` via a temp folder and a rename; an
    existing ``out`` (``force``) keeps every other file."""
    from timm.models import save_for_hf
    out = Path(out)
    check_out_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The exported pretrained cfg describes these weights, not the registry tag the model was built from.
    cfg = {k: v for k, v in model.pretrained_cfg.items()
           if k not in ('description', 'notes', 'hf_hub_id', 'file', 'url', 'source', 'state_dict', 'label_names',
                        'label_descriptions')}
    cfg.update(tag=tag, license=license)
    if metrics:
        cfg['description'] = f"{dataset or ''} {metrics_line(metrics)}".strip()
    model_config = {'label_names': list(label_names)} if label_names else None
    model_args = {'eca_kernel_sizes': list(model.eca_kernel_sizes)} if hasattr(model, 'eca_kernel_sizes') else None
    source_cfg, model.pretrained_cfg = model.pretrained_cfg, cfg
    try:
        with atomic_dir(out, merge=True) as tmp:
            save_for_hf(
                model, tmp, model_config=model_config, model_args=model_args,
                safe_serialization=True, data_config=data_config)
            (tmp / 'README.md').write_text(render_model_card(
                model, repo_id, metrics=metrics, dataset=dataset, license=license, source=source, recipe=recipe,
                recipe_text=recipe_text, results_note=results_note, input_size=(data_config or {}).get('input_size'),
                base_model=base_model), encoding='utf-8')
            if recipe:  # the run's arguments, as timm uploads them
                import yaml
                (tmp / 'train_hparams.yaml').write_text(yaml.safe_dump(recipe, sort_keys=False), encoding='utf-8')
    finally:
        model.pretrained_cfg = source_cfg
    return out


def _folder_label_names(args: Dict[str, Any], num_classes: int) -> Optional[List[str]]:
    """Class names of a folder dataset (train split subfolders in timm's natural sort), when still on disk."""
    from timm.data.readers.reader_image_folder import natural_key
    data_dir = args.get('data_dir')
    if not data_dir or '/' in (args.get('dataset') or ''):
        return None
    d = Path(data_dir) / (args.get('train_split') or 'train')
    if not d.is_dir():
        return None
    names = sorted((p.name for p in d.iterdir() if p.is_dir()), key=natural_key)
    return names if len(names) == num_classes else None


def dataset_label_names(dataset: Optional[str], num_classes: int, args: Optional[Dict[str, Any]] = None
                        ) -> Optional[List[str]]:
    """Class names where known: ImageNet-1k synsets (timm's ImageNetInfo), or a folder dataset's classes."""
    if num_classes == 1000 and (dataset or '').lower().replace('_', '-') in ('imagenet-1k', 'imagenet', 'ilsvrc2012'):
        from timm.data import ImageNetInfo
        return list(ImageNetInfo().label_names())
    return _folder_label_names(args or {}, num_classes)


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
    with atomic_write(path) as f:
        f.write((json.dumps(manifest, indent=2) + '\n').encode('utf-8'))
    load_manifest.cache_clear()


def _check_record(model: nn.Module, info: Dict[str, Any]) -> Tuple[Path, str, str]:
    """Manifest path, architecture and tag for ``--record``, or an error saying what is missing."""
    path = checkout_manifest('--record')
    arch, tag = model.pretrained_cfg['architecture'], info.get('tag')
    if not tag:
        raise ValueError(f'--record needs --repo-id ORG/{arch}.<tag>, the name timm will list the weights under')
    return path, arch, tag


def record_in_manifest(repo: str, model: nn.Module, info: Dict[str, Any]) -> str:
    """Add (or replace) the published weights as a tag in the checkout's hub/manifest.json; returns the tag.

    The registry lists the tag (with ``hf_hub_id``) from the next import of ``eca_timm``.
    """
    path, arch, tag = _check_record(model, info)
    manifest = json.loads(path.read_text(encoding='utf-8'))
    org, name = repo.split('/', 1)
    entry: Dict[str, Any] = {'repo': name if org == manifest['org'] else repo, 'published': True,
                             'license': info.get('license', 'mit')}
    if info.get('dataset'):
        entry['dataset'] = info['dataset']
    if info.get('source'):
        entry['source'] = {k: v for k, v in info['source'].items() if k in ('file', 'url', 'sha256')}
    if info.get('metrics'):
        entry['metrics'] = info['metrics']
    if info.get('recipe'):
        recipe = info['recipe']
        entry['recipe'] = 'timm train.py: ' + ', '.join(
            f'{k}={v}' for k, v in effective_recipe(recipe).items())
    elif info.get('recipe_text'):
        entry['recipe'] = info['recipe_text']
    manifest['weights'][f'{arch}.{tag}'] = entry
    write_manifest(path, manifest)
    return f'{arch}.{tag}'
