"""Weights on the Hugging Face Hub: the manifest of pretrained tags, model cards and ``eca-timm publish``.

``hub/manifest.json`` (shipped in the wheel as ``eca_timm.hub_data``) is the one table of pretrained tags: repo
name, dataset, license, source checkpoint (file, sha256) and metrics. The registry's pretrained cfgs
(``hf_hub_id``, metrics in ``description``) and the model cards are both generated from it. The Hub
organisation is the manifest's ``org``, overridden by the ``ECA_TIMM_HUB_ORG`` environment variable (read when
``eca_timm`` is imported).
"""
import argparse
import copy
import functools
import json
import logging
import os
import pickle
import string
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from ._io import atomic_dir, atomic_write
from ._resources import HUB_DATA, checkout_dir, data_file

__all__ = [
    'HUB_ORG_ENV', 'load_manifest', 'hub_org', 'manifest_entry', 'repo_id', 'pretrained_cfgs',
    'render_model_card', 'write_hub_folder', 'record_in_manifest', 'upload_folder', 'publish', 'pretrained_load_error',
    'register',
]

_logger = logging.getLogger(__name__)

HUB_ORG_ENV = 'ECA_TIMM_HUB_ORG'
# Files of a repo that are never replaced without --force.
PROTECTED_FILES = ('README.md', 'config.json', 'model.safetensors', 'pytorch_model.bin')
RECIPE_KEYS = (
    'pretrained_path', 'initial_checkpoint', 'epochs', 'batch_size', 'opt', 'lr', 'lr_base', 'momentum', 'weight_decay', 'sched', 'warmup_epochs', 'decay_epochs',
    'decay_rate', 'smoothing', 'aa', 'mixup', 'cutmix', 'drop', 'drop_path', 'model_ema', 'model_ema_decay',
    'reprob', 'amp', 'img_size', 'input_size', 'seed')


def _hub_data() -> Any:
    """The packaged ``hub/`` folder (``eca_timm.hub_data``) as an ``importlib.resources`` Traversable."""
    return data_file(HUB_DATA)


def _checkout_hub() -> Optional[Path]:
    """``hub/`` of the source checkout this package runs from (None in a wheel install): the manifest's write side."""
    return checkout_dir('hub')


@functools.lru_cache(maxsize=None)
def load_manifest() -> Dict[str, Any]:
    """The parsed ``hub/manifest.json``."""
    return json.loads((_hub_data() / 'manifest.json').read_text(encoding='utf-8'))


def hub_org() -> str:
    """Hub organisation of the pretrained tags: ``$ECA_TIMM_HUB_ORG``, else the manifest's ``org``."""
    return os.environ.get(HUB_ORG_ENV) or load_manifest()['org']


def manifest_entry(model_tag: str) -> Optional[Dict[str, Any]]:
    """The manifest entry of ``'<model>.<tag>'``, or None."""
    return load_manifest()['weights'].get(model_tag)


def repo_id(model_tag: str) -> str:
    """Hub repo id of ``'<model>.<tag>'``: ``<org>/<manifest repo>`` (the tag itself when not listed); a manifest
    repo given as ``ORG/NAME`` is used as is."""
    repo = (manifest_entry(model_tag) or {}).get('repo', model_tag)
    return repo if '/' in repo else f'{hub_org()}/{repo}'


def _metrics_line(metrics: Dict[str, Any]) -> str:
    return f"top-1 {metrics['top1']:.2f}, top-5 {metrics['top5']:.2f}"


def pretrained_cfgs(architectures: Iterable[str]) -> Dict[str, Dict[str, Any]]:
    """Manifest tags of ``architectures`` as timm pretrained cfg fields, keyed ``'<model>.<tag>'``.

    Architectures without a tag get an untagged entry, so timm still finds their data config.
    """
    architectures = list(architectures)
    cfgs: Dict[str, Dict[str, Any]] = {}
    for model_tag, entry in load_manifest()['weights'].items():
        arch = model_tag.split('.', 1)[0]
        if arch not in architectures:
            continue
        cfg: Dict[str, Any] = {'hf_hub_id': repo_id(model_tag)}
        if entry.get('license'):
            cfg['license'] = entry['license']
        if entry.get('metrics'):
            cfg['description'] = f"{entry.get('dataset', '')} {_metrics_line(entry['metrics'])}".strip()
            cfg['notes'] = (entry['metrics']['provenance'],)
        cfgs[model_tag] = cfg
    for arch in architectures:
        if not any(k.split('.', 1)[0] == arch for k in cfgs):
            cfgs[arch] = {}
    return cfgs


# ---------------------------------------------------------------------------------------------------------------
# pretrained=True errors

LOAD_ERRORS: Tuple[type, ...] = (OSError, EOFError, RuntimeError, pickle.UnpicklingError)
try:
    from safetensors import SafetensorError
    LOAD_ERRORS += (SafetensorError,)
except ImportError:  # pragma: no cover
    pass


def pretrained_load_error(variant: str, kwargs: Dict[str, Any], error: BaseException) -> RuntimeError:
    """An error naming where ``pretrained=True`` looked for weights and what to do about it."""
    from timm.models._builder import _resolve_pretrained_source, resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    load_from, loc = _resolve_pretrained_source(cfg.to_dict())
    name = f'{variant}.{cfg.tag}' if cfg.tag else variant
    cause = f'{type(error).__name__}: {error}'.strip()
    if load_from == 'hf-hub':
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
        repo = loc[0] if isinstance(loc, tuple) else loc
        not_found = isinstance(error, (RepositoryNotFoundError, EntryNotFoundError))
        if not_found and not isinstance(error, FileNotFoundError):  # LocalEntryNotFoundError: offline, not cached
            why = f'the repo or its weights are not on the Hub (not published yet, or set {HUB_ORG_ENV} to the ' \
                  f'organisation that has them)'
        elif isinstance(error, (ConnectionError, FileNotFoundError)):
            why = 'the Hub cannot be reached (offline?) and the files are not in the local Hub cache (HF_HUB_CACHE)'
        else:
            why = f"the downloaded weights are unreadable (corrupt?): delete models--{repo.replace('/', '--')} " \
                  f"from the Hub cache and retry"
        src = ((manifest_entry(name) or {}).get('source') or {}).get('file', 'CHECKPOINT')
        return RuntimeError(
            f"{name}: no usable pretrained weights from Hugging Face Hub repo '{repo}': {why} ({cause}). "
            f"To make them: `eca-timm convert {src} --model {variant} --out DIR`, then "
            f"`eca-timm publish DIR --repo-id {repo}`; or load a file directly with "
            f"pretrained_cfg_overlay=dict(file='{src}'), or a converted folder with "
            f"timm.create_model('local-dir:DIR').")
    return RuntimeError(
        f"{name}: could not load pretrained weights from {load_from or 'nowhere'} {loc!r} ({cause}). "
        f"Pass a readable checkpoint (pretrained_cfg_overlay=dict(file=...)), a converted folder "
        f"('local-dir:DIR'), or pretrained=False.")


# ---------------------------------------------------------------------------------------------------------------
# model cards and Hub folders

def _compute(model: nn.Module, img_size: int) -> Tuple[int, float]:
    """Parameters and GMACs of ``model`` at ``img_size`` (torch's FlopCounterMode on a meta-device copy)."""
    from torch.utils.flop_counter import FlopCounterMode
    params = sum(p.numel() for p in model.parameters())
    meta = copy.deepcopy(model).to('meta').eval()
    in_chans = getattr(model, 'in_chans', 3)
    with FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, in_chans, img_size, img_size, device='meta'))
    return params, counter.get_total_flops() / 2e9


def _card_metadata(name: str, license: str, dataset: Optional[str], metrics: Optional[Dict[str, Any]]) -> str:
    import yaml
    meta: Dict[str, Any] = {
        'tags': ['image-classification', 'timm', 'eca-timm', 'eca-net'],
        'library_name': 'timm', 'pipeline_tag': 'image-classification', 'license': license,
    }
    if dataset:
        meta['datasets'] = [dataset]
    if metrics:
        meta['model-index'] = [{'name': name, 'results': [{
            'task': {'type': 'image-classification', 'name': 'Image Classification'},
            'dataset': {'type': dataset or 'custom', 'name': dataset or 'custom', 'split': 'validation'},
            'metrics': [
                {'type': 'accuracy', 'name': 'Top-1 Accuracy', 'value': float(metrics['top1'])},
                {'type': 'accuracy', 'name': 'Top-5 Accuracy', 'value': float(metrics['top5'])},
            ],
        }]}]
    return yaml.safe_dump(meta, sort_keys=False)


def render_model_card(
        model: nn.Module,
        repo_id: str,
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        license: str = 'mit',
        source: Optional[Dict[str, Any]] = None,
        recipe: Optional[Dict[str, Any]] = None,
        recipe_text: Optional[str] = None,
        results_note: Optional[str] = None,
        input_size: Optional[Tuple[int, int, int]] = None,
) -> str:
    """The README.md of a Hub repo, from ``hub/model_card.md``: YAML metadata, details, usage, results, citation."""
    cfg = model.pretrained_cfg
    input_size = tuple(input_size or cfg.get('input_size', (3, 224, 224)))
    params, gmacs = _compute(model, input_size[-1])
    name = repo_id.split('/')[-1]
    if recipe:
        recipe_md = '\n'.join(f'- {k}: `{recipe[k]}`' for k in RECIPE_KEYS if recipe.get(k) not in (None, ''))
        recipe_md = f'timm `train.py` arguments (from args.yaml):\n\n{recipe_md}'
    else:
        recipe_md = recipe_text or 'Not recorded.'
    if metrics:
        results = (
            f"| dataset | top-1 | top-5 | provenance |\n|---|---:|---:|---|\n"
            f"| {dataset or 'custom'} (validation) | {float(metrics['top1']):.2f} | {float(metrics['top5']):.2f} "
            f"| {metrics.get('provenance', '')} |")
    else:
        results = results_note or 'No evaluation results recorded for these weights.'
    src = 'trained with timm `train.py`'
    if source:
        src = f"`{source.get('file', '?')}`" + (f" (sha256 `{source['sha256']}`)" if source.get('sha256') else '')
        src += f", {source['url']}" if source.get('url') else ''
    description = (
        f'ECA-Net image classification weights for `{model.pretrained_cfg.get("architecture")}`, for timm via the '
        f'`eca_timm` plugin. ECA (Efficient Channel Attention) gates each residual block\'s channels with a 1-D '
        f'convolution over the pooled channel descriptor.')
    template = string.Template((_hub_data() / 'model_card.md').read_text(encoding='utf-8'))
    return template.substitute(
        metadata=_card_metadata(name, license, dataset, metrics), repo_name=name, repo_id=repo_id,
        description=description, architecture=cfg.get('architecture'),
        kernel_sizes=', '.join(map(str, getattr(model, 'eca_kernel_sizes', ()))) or 'none (a study baseline)',
        params_m=f'{params / 1e6:.2f}',
        gmacs=f'{gmacs:.2f}', img_size=input_size[-1], input_size=' x '.join(map(str, input_size)),
        num_classes=model.num_classes, dataset=dataset or 'custom', source=src, recipe=recipe_md, results=results)


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse to write over an existing folder unless forced."""
    if Path(out).exists() and not force:
        raise FileExistsError(f'{out} exists; pass --force to replace it')


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
        force: bool = False,
) -> Path:
    """Write model.safetensors, timm's config.json and README.md to ``out`` via a temp folder and a rename."""
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
        cfg['description'] = f"{dataset or ''} {_metrics_line(metrics)}".strip()
    model_config = {'label_names': list(label_names)} if label_names else None
    model_args = {'eca_kernel_sizes': list(model.eca_kernel_sizes)} if hasattr(model, 'eca_kernel_sizes') else None
    source_cfg, model.pretrained_cfg = model.pretrained_cfg, cfg
    try:
        with atomic_dir(out) as tmp:
            save_for_hf(
                model, tmp, model_config=model_config, model_args=model_args,
                safe_serialization=True, data_config=data_config)
            (tmp / 'README.md').write_text(render_model_card(
                model, repo_id, metrics=metrics, dataset=dataset, license=license, source=source, recipe=recipe,
                recipe_text=recipe_text, results_note=results_note,
                input_size=(data_config or {}).get('input_size')), encoding='utf-8')
    finally:
        model.pretrained_cfg = source_cfg
    return out


# ---------------------------------------------------------------------------------------------------------------
# publish

def _load_checkpoint_meta(path: Path) -> Dict[str, Any]:
    """The checkpoint's top-level non-tensor fields (epoch, arch, metric) and which state dicts it holds."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict):
        return {}
    meta = {k: ckpt[k] for k in ('epoch', 'arch', 'metric') if k in ckpt}
    meta['has_ema'] = ckpt.get('state_dict_ema') is not None
    return meta


def _best_row(summary: Path, args: Dict[str, Any], epoch: Optional[int]) -> Dict[str, float]:
    """summary.csv's row of the best epoch: the checkpoint's epoch, else the best ``eval_<eval_metric>``."""
    from .study import read_summary  # a resumed run's summary.csv repeats its header and redone epochs
    rows = read_summary(summary)
    if not rows:
        raise ValueError(f'{summary} has no rows')
    if epoch is not None and int(epoch) in rows:
        return rows[int(epoch)]
    metric = f"eval_{args.get('eval_metric', 'top1')}"
    decreasing = metric == 'eval_loss'
    return (min if decreasing else max)(rows.values(), key=lambda r: r[metric])


def _dataset_name(args: Dict[str, Any]) -> Optional[str]:
    ds = args.get('dataset') or ''
    if '/' in ds:  # torch/cifar10, hfds/imagenet-1k, tfds/...
        return ds.split('/', 1)[1]
    data_dir = args.get('data_dir')
    return Path(data_dir).name if data_dir else (ds or None)


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


def _create(model_name: str, state_dict: Dict[str, torch.Tensor], **kwargs: Any) -> nn.Module:
    """The model with ``state_dict`` loaded (all of it); the classifier is sized from the checkpoint."""
    import timm
    from .convert import fit_state_dict, remap_official_keys
    model = timm.create_model(model_name, **kwargs)
    weight = remap_official_keys(state_dict, model).get(f"{model.pretrained_cfg['classifier']}.weight")
    if weight is not None and weight.shape[0] != model.num_classes:
        model.reset_classifier(weight.shape[0])
    model.load_state_dict(fit_state_dict(state_dict, model), strict=True)
    return model.eval()


def _repo_tag(repo: str, arch: str) -> Optional[str]:
    """The pretrained tag a repo named ``ORG/<arch>.<tag>`` holds, else None."""
    name = repo.split('/')[-1]
    return (name[len(arch) + 1:] or None) if name.startswith(f'{arch}.') else None


def load_publish_source(
        source: str,
        repo: str,
        model_name: Optional[str] = None,
        use_ema: bool = True,
        dataset: Optional[str] = None,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model and card fields of a train.py output folder, a checkpoint file or a converted Hub folder."""
    import timm
    import yaml
    from timm.models import load_state_dict
    from . import MODEL_MODULES, STUDY_MODULES
    from .convert import file_sha256

    src = Path(source)
    known = set(timm.list_models(module=list(MODEL_MODULES + STUDY_MODULES)))
    info: Dict[str, Any] = {}
    if src.is_dir() and (src / 'config.json').is_file():  # a converted / downloaded Hub folder
        model = timm.create_model(f'local-dir:{src}', pretrained=True)
        arch = model.pretrained_cfg['architecture']
        tag = _repo_tag(repo, arch) or model.pretrained_cfg.get('tag')
        entry = manifest_entry(f'{arch}.{tag}') or {}
        info.update(tag=tag, metrics=entry.get('metrics'), source=entry.get('source') or {'file': src.name},
                    dataset=dataset or entry.get('dataset'), license=entry.get('license', 'mit'),
                    recipe_text=entry.get('recipe'))
        info['label_names'] = model.pretrained_cfg.get('label_names')
        return model.eval(), info

    args: Dict[str, Any] = {}
    if src.is_dir():
        ckpt = next((src / n for n in ('model_best.pth.tar', 'last.pth.tar') if (src / n).is_file()), None)
        if ckpt is None:
            raise FileNotFoundError(f'{src} has neither model_best.pth.tar nor last.pth.tar (nor config.json)')
        if (src / 'args.yaml').is_file():
            args = yaml.safe_load((src / 'args.yaml').read_text()) or {}
    elif src.is_file():
        ckpt = src
    else:
        raise FileNotFoundError(f'{src}: no such file or folder')
    meta = _load_checkpoint_meta(ckpt)
    name = model_name or args.get('model') or meta.get('arch')
    if name not in known:
        raise ValueError(
            f"{ckpt}: cannot tell the model (arch={meta.get('arch')!r}); pass --model, one of {sorted(known)}")
    ema = use_ema and meta.get('has_ema', False)
    kwargs = dict(args.get('model_kwargs') or {})
    if args.get('num_classes') is not None:
        kwargs['num_classes'] = args['num_classes']
    if args.get('in_chans') is not None or args.get('input_size'):  # train.py's rule: in_chans, else input_size[0]
        kwargs['in_chans'] = args['in_chans'] if args.get('in_chans') is not None else args['input_size'][0]
    model = _create(name, load_state_dict(str(ckpt), use_ema=ema), **kwargs)
    tag = _repo_tag(repo, name)
    entry = manifest_entry(f'{name}.{tag}') or {}
    sha = file_sha256(str(ckpt))
    info.update(tag=tag, source={'file': ckpt.name, 'sha256': sha}, license=entry.get('license', 'mit'))
    info['dataset'] = dataset or entry.get('dataset') or _dataset_name(args)
    if src.is_dir() and (src / 'summary.csv').is_file():
        # train.py's summary.csv evaluates the EMA weights when EMA runs on the device, else the model's.
        evaluated_ema = meta.get('has_ema', False) and not args.get('model_ema_force_cpu')
        if ema == evaluated_ema:
            row = _best_row(src / 'summary.csv', args, meta.get('epoch'))
            info['metrics'] = {
                'top1': row['eval_top1'], 'top5': row['eval_top5'],
                'provenance': f"timm train.py evaluation, epoch {int(row['epoch'])} of summary.csv (best checkpoint"
                              f"{', EMA weights' if ema else ''})"}
        else:
            info['results_note'] = (
                f"summary.csv evaluates the {'EMA' if evaluated_ema else 'non-EMA'} weights, these are the "
                f"{'EMA' if ema else 'non-EMA'} weights, so no results are given "
                f"({'drop --no-ema' if evaluated_ema else 'pass --no-ema'} to publish the evaluated weights).")
            _logger.warning(info['results_note'])
    elif entry.get('metrics'):
        expected = (entry.get('source') or {}).get('sha256')
        if expected in (None, sha):
            info['metrics'] = entry['metrics']
        else:
            _logger.warning(f'{ckpt} is not the checkpoint hub/manifest.json lists for {name}.{tag} (sha256 differs): '
                            f'its metrics are left out of the card')
    if args:
        from timm.data import resolve_data_config
        info['recipe'] = args
        info['data_config'] = resolve_data_config(args, model=model)
    info['label_names'] = dataset_label_names(info['dataset'], model.num_classes, args)
    return model, info


def _check_record(model: nn.Module, info: Dict[str, Any]) -> Tuple[Path, str, str]:
    """Manifest path, architecture and tag for ``--record``, or an error saying what is missing."""
    hub_dir = _checkout_hub()
    path = hub_dir / 'manifest.json' if hub_dir is not None else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f'{path or "hub/manifest.json"} not found: --record updates hub/manifest.json of an eca-timm source '
            f'checkout (git clone it and pip install -e it); an installed wheel has no manifest to edit')
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
    entry: Dict[str, Any] = {'repo': name if org == manifest['org'] else repo, 'license': info.get('license', 'mit')}
    if info.get('dataset'):
        entry['dataset'] = info['dataset']
    if info.get('source'):
        entry['source'] = {k: v for k, v in info['source'].items() if k in ('file', 'url', 'sha256')}
    if info.get('metrics'):
        entry['metrics'] = info['metrics']
    if info.get('recipe'):
        recipe = info['recipe']
        entry['recipe'] = 'timm train.py: ' + ', '.join(
            f'{k}={recipe[k]}' for k in RECIPE_KEYS if recipe.get(k) not in (None, ''))
    elif info.get('recipe_text'):
        entry['recipe'] = info['recipe_text']
    manifest['weights'][f'{arch}.{tag}'] = entry
    with atomic_write(path) as f:
        f.write((json.dumps(manifest, indent=2) + '\n').encode('utf-8'))
    load_manifest.cache_clear()
    return f'{arch}.{tag}'


def upload_folder(
        folder: Path,
        repo_id: str,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        force: bool = False,
) -> Any:
    """Create the repo (and branch) if needed and upload ``folder``; existing card/weights need ``force``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError
    from . import __version__
    api = HfApi(library_name='eca-timm', library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    try:
        existing = set(api.list_repo_files(repo_id, revision=revision))
    except RevisionNotFoundError:
        existing = set()
    clash = sorted(existing.intersection(PROTECTED_FILES))
    if clash and not force:
        raise FileExistsError(
            f"Hub repo {repo_id}@{revision or 'main'} already has {', '.join(clash)}; pass --force to replace them")
    # huggingface_hub shows its own progress bars while uploading.
    return api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), revision=revision,
        commit_message=commit_message or f'Add {repo_id.split("/")[-1]} weights (eca-timm publish)')


def publish(
        source: str,
        repo_id: str,
        out: Optional[str] = None,
        dry_run: bool = False,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        force: bool = False,
        use_ema: bool = True,
        model_name: Optional[str] = None,
        dataset: Optional[str] = None,
        record: bool = False,
) -> Path:
    """Build the Hub folder of ``source`` (in ``out`` or a temp folder) and, unless ``dry_run``, upload it.

    ``record``: also list the weights as a pretrained tag in hub/manifest.json (after a successful upload).
    """
    if dry_run and not out:
        raise ValueError('--dry-run writes the repo folder to --out DIR; pass --out')
    if dry_run and record:
        raise ValueError('--record lists published weights; drop --dry-run (or --record)')
    if '/' not in repo_id:
        raise ValueError(f'--repo-id must be ORG/NAME, got {repo_id!r}')
    if out:
        check_out_dir(Path(out), force)
    model, info = load_publish_source(source, repo_id, model_name=model_name, use_ema=use_ema, dataset=dataset)
    if record:
        _check_record(model, info)
    fields = dict(tag=info.get('tag'), metrics=info.get('metrics'), dataset=info.get('dataset'),
                  license=info.get('license', 'mit'), source=info.get('source'), recipe=info.get('recipe'),
                  recipe_text=info.get('recipe_text'), results_note=info.get('results_note'),
                  label_names=info.get('label_names'),
                  data_config=info.get('data_config'))
    if out:
        folder = write_hub_folder(model, Path(out), repo_id, force=force, **fields)
        if not dry_run:
            upload_folder(folder, repo_id, private, revision, commit_message, force)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_hub_folder(model, Path(tmp) / repo_id.split('/')[-1], repo_id, **fields)
            upload_folder(folder, repo_id, private, revision, commit_message, force)
        folder = Path(f'hf-hub:{repo_id}')
    if record:
        _logger.info(f'recorded {record_in_manifest(repo_id, model, info)} in hub/manifest.json')
    return folder


def _run(args: argparse.Namespace) -> int:
    where = publish(
        args.source, args.repo_id, out=args.out, dry_run=args.dry_run, private=args.private, revision=args.revision,
        commit_message=args.commit_message, force=args.force, use_ema=not args.no_ema, model_name=args.model,
        dataset=args.dataset, record=args.record)
    print(f'{"wrote" if args.dry_run else "published"} {where}' + ('' if args.dry_run else f' ({args.repo_id})'))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'publish', help='train.py output folder / checkpoint / converted folder -> Hub repo with a model card')
    p.add_argument(
        'source', help='train.py output folder, a checkpoint file, or a folder written by `eca-timm convert`')
    p.add_argument('--repo-id', required=True, help='ORG/NAME, e.g. my-org/eca_resnet50.my_tag')
    p.add_argument('--out', default=None, help='also write the repo folder here (required with --dry-run)')
    p.add_argument('--dry-run', action='store_true', help='write the folder only, upload nothing')
    p.add_argument('--private', action='store_true', help='create the repo private')
    p.add_argument('--revision', default=None, help='branch to upload to (created if missing)')
    p.add_argument('--commit-message', default=None)
    p.add_argument('--force', action='store_true', help='replace an existing --out folder or card/weights on the Hub')
    p.add_argument('--no-ema', action='store_true', help='publish state_dict, not state_dict_ema')
    p.add_argument('--model', default=None, help='model name when the checkpoint does not record it')
    p.add_argument('--dataset', default=None, help='Hub dataset id for the card (default: from args.yaml)')
    p.add_argument('--record', action='store_true',
                   help='list the weights as pretrained tag <model>.<tag> in hub/manifest.json (source checkout)')
    p.set_defaults(func=_run)
