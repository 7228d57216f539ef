"""Hub-ready folders: model.safetensors, timm's config.json (which transformers reads too) and the README.md card."""
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from torch import nn

from .._io import atomic_dir, check_writable, read_json, write_json
from ..models._pretrained import metrics_line
from .card import WeightsInfo, render_model_card

__all__ = ['HUB_FILES', 'SOURCE_KEY', 'check_out_dir', 'dataset_label_names', 'folder_source', 'write_hub_folder']

# Every file eca-timm writes in a Hub folder; a write with --force removes those of an earlier write it does not
# write itself (a converted folder keeps no train_hparams.yaml of an earlier publish).
HUB_FILES = ('README.md', 'config.json', 'model.safetensors', 'train_hparams.yaml')
# config.json's own key (timm and transformers ignore it): the source checkpoint of the weights (file, sha256, url).
SOURCE_KEY = 'eca_timm'
# Pretrained cfg fields of the registry tag a model was built from that do not describe the exported weights.
_REGISTRY_FIELDS = ('tag', 'description', 'notes', 'label_names', 'label_descriptions')


def check_out_dir(out: Path, force: bool, sources: Iterable[Path] = ()) -> None:
    """Refuse, before any work, an ``--out`` that cannot be written, is the working directory or holds a source,
    and an existing one unless forced.

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
    check_writable(out, '--out', folder=True)
    if out.exists() and not force:
        raise FileExistsError(f'{out} exists; pass --force to replace the files this command writes in it')


def _export_config(path: Path, info: WeightsInfo) -> None:
    """timm's config.json as transformers loads it too, describing these weights rather than the registry tag.

    ``save_for_hf`` (timm 1.0.31) records ``num_classes`` in ``model_args`` as well; transformers' TimmWrapper passes
    its own ``num_classes`` beside them, which fails ("got multiple values"). timm builds the head from the top-level
    ``num_classes`` (into the pretrained cfg), so ``model_args`` need not repeat it.
    """
    config = read_json(path)
    config.get('model_args', {}).pop('num_classes', None)
    cfg = config['pretrained_cfg']
    for key in _REGISTRY_FIELDS:
        cfg.pop(key, None)
    if info.tag:
        cfg['tag'] = info.tag
    cfg['license'] = info.license
    if info.metrics:
        cfg['description'] = f"{info.dataset or ''} {metrics_line(info.metrics)}".strip()
    if info.source:
        config[SOURCE_KEY] = {'source': {k: v for k, v in info.source.items() if k in ('file', 'sha256', 'url')}}
    write_json(path, config)


def folder_source(config: Dict[str, Any]) -> Dict[str, Any]:
    """The source checkpoint (file, sha256, url) a Hub folder's config.json records, or {}."""
    return dict((config.get(SOURCE_KEY) or {}).get('source') or {})


def write_hub_folder(model: nn.Module, out: Path, repo_id: str, info: WeightsInfo, force: bool = False,
                     local_dir: Optional[str] = None) -> Path:
    """Write model.safetensors, timm's config.json and README.md (and the run's train_hparams.yaml) to ``out`` via a
    temp folder; an existing ``out`` (``force``) keeps every file eca-timm does not write. ``local_dir``: the card's
    usage loads the folder from there (it is not on the Hub)."""
    from timm.models import save_for_hf
    out = Path(out)
    check_out_dir(out, force)
    model_args = {'eca_kernel_sizes': list(model.eca_kernel_sizes)} if hasattr(model, 'eca_kernel_sizes') else None
    with atomic_dir(out, merge=True) as tmp:
        save_for_hf(model, tmp, model_config={'label_names': list(info.label_names)} if info.label_names else None,
                    model_args=model_args, safe_serialization=True, data_config=info.data_config)
        _export_config(tmp / 'config.json', info)
        (tmp / 'README.md').write_text(render_model_card(model, repo_id, info, local_dir=local_dir), encoding='utf-8')
        if info.recipe:  # the run's arguments, as timm uploads them
            import yaml
            (tmp / 'train_hparams.yaml').write_text(yaml.safe_dump(info.recipe, sort_keys=False), encoding='utf-8')
        written = {p.name for p in tmp.iterdir()}
    for name in set(HUB_FILES) - written:  # an earlier write's, which would describe other weights
        (out / name).unlink(missing_ok=True)
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
