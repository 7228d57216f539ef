"""``eca-timm publish``: a train.py output folder, a checkpoint or a converted folder -> a Hub repo with a card.

The card's metrics come from the run's own summary.csv and args.yaml; the manifest's released numbers only go on
the released file itself.
"""
import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .._summary import read_summary
from .._version import __version__
from ..models import MODEL_MODULES, STUDY_MODULES
from ..models._pretrained import manifest_entry
from ..models._state_dict import fit_state_dict, remap_checkpoint
from .convert import file_sha256, unreadable_checkpoint
from .hub_folder import _check_record, check_out_dir, dataset_label_names, record_in_manifest, write_hub_folder

__all__ = ['PROTECTED_FILES', 'load_publish_source', 'publish', 'register', 'upload_folder']

_logger = logging.getLogger(__name__)

# Files of a repo that are never replaced without --force.
PROTECTED_FILES = ('README.md', 'config.json', 'model.safetensors', 'pytorch_model.bin')


def _load_checkpoint_meta(path: Path) -> Dict[str, Any]:
    """The checkpoint's top-level non-tensor fields (epoch, arch, metric) and which state dicts it holds."""
    if path.suffix == '.safetensors':
        return {}
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pickle, zip, EOF, KeyError on a text file...
        raise unreadable_checkpoint(path, e) from e
    if not isinstance(ckpt, dict):
        return {}
    meta = {k: ckpt[k] for k in ('epoch', 'arch', 'metric') if k in ckpt}
    meta['has_ema'] = ckpt.get('state_dict_ema') is not None
    return meta


def _best_row(summary: Path, args: Dict[str, Any], epoch: Optional[int]) -> Dict[str, float]:
    """summary.csv's row of the best epoch: the checkpoint's epoch, else the best ``eval_<eval_metric>``."""
    rows = read_summary(summary)  # names the file when it is not train.py's; a resumed run repeats its header
    if epoch is not None and int(epoch) in rows:
        return rows[int(epoch)]
    metric = f"eval_{args.get('eval_metric', 'top1')}"
    decreasing = metric == 'eval_loss'
    return (min if decreasing else max)(rows.values(), key=lambda r: r[metric])


def _dataset_name(args: Dict[str, Any]) -> Optional[str]:
    """The dataset a run names (``torch/cifar10`` -> ``cifar10``); a folder dataset has no name (``--dataset``)."""
    ds = args.get('dataset') or ''
    return ds.split('/', 1)[1] if '/' in ds else None


# args.yaml keys holding local paths: a card shows only their file names.
PATH_KEYS = ('pretrained_path', 'initial_checkpoint', 'resume', 'data_dir', 'data', 'output', 'class_map')


def _public_recipe(args: Dict[str, Any]) -> Dict[str, Any]:
    """args.yaml without local paths (file names kept), for the card and the upload."""
    return {k: (Path(str(v)).name if k in PATH_KEYS and v else v) for k, v in args.items()}


def _base_model(name: str, args: Dict[str, Any]) -> Optional[str]:
    """The Hub repo a run started from (train.py ``--pretrained``: the model's default pretrained tag), if any."""
    if not args.get('pretrained'):
        return None
    import timm
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else None


def _read_args(path: Path) -> Dict[str, Any]:
    import yaml
    try:
        args = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f'{path} is not valid YAML ({" ".join(str(e).split())}); fix or remove it') from e
    if args is not None and not isinstance(args, dict):
        raise ValueError(f'{path} is not a train.py args.yaml (a mapping of argument names to values)')
    return args or {}


def _create(model_name: str, state_dict: Dict[str, torch.Tensor], **kwargs: Any) -> nn.Module:
    """The model with ``state_dict`` loaded (all of it); the classifier is sized from the checkpoint."""
    import timm
    model = timm.create_model(model_name, **kwargs)
    weight = remap_checkpoint(state_dict, model).get(f"{model.pretrained_cfg['classifier']}.weight")
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
    from timm.models import load_state_dict

    src = Path(source)
    known = set(timm.list_models(module=list(MODEL_MODULES + STUDY_MODULES)))
    info: Dict[str, Any] = {}
    if src.is_dir() and (src / 'config.json').is_file():  # a converted / downloaded Hub folder
        model = timm.create_model(f'local-dir:{src}', pretrained=True)
        arch = model.pretrained_cfg['architecture']
        tag = _repo_tag(repo, arch) or model.pretrained_cfg.get('tag')
        entry = manifest_entry(f'{arch}.{tag}') or {}
        # a folder `eca-timm convert` made from the released file: convert refuses any other file once the
        # manifest knows the file's sha256; without a recorded sha256 nothing ties the folder to those numbers
        released = bool((entry.get('source') or {}).get('sha256')) and model.pretrained_cfg.get('tag') == tag
        if entry.get('metrics') and not released:
            _logger.warning(f'{src}: hub/manifest.json has no sha256 tying it to {arch}.{tag}; its released metrics '
                            f'are left out of the card')
        info.update(tag=tag, metrics=entry.get('metrics') if released else None,
                    source=(entry.get('source') if released else None) or {'file': src.name},
                    dataset=dataset or (entry.get('dataset') if released else None),
                    license=entry.get('license', 'mit'), recipe_text=entry.get('recipe') if released else None)
        info['label_names'] = model.pretrained_cfg.get('label_names')
        return model.eval(), info

    args: Dict[str, Any] = {}
    if src.is_dir():
        ckpt = next((src / n for n in ('model_best.pth.tar', 'last.pth.tar') if (src / n).is_file()), None)
        if ckpt is None:
            raise FileNotFoundError(f'{src} has neither model_best.pth.tar nor last.pth.tar (nor config.json)')
        if (src / 'args.yaml').is_file():
            args = _read_args(src / 'args.yaml')
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
    try:
        state_dict = load_state_dict(str(ckpt), use_ema=ema)
    except Exception as e:
        raise unreadable_checkpoint(ckpt, e) from e
    model = _create(name, state_dict, **kwargs)
    tag = _repo_tag(repo, name)
    entry = manifest_entry(f'{name}.{tag}') or {}
    sha = file_sha256(str(ckpt))
    # the manifest's numbers describe one released file: they apply only to that exact file (sha256 known, equal)
    released = (entry.get('source') or {}).get('sha256') == sha
    info.update(tag=tag, source={'file': ckpt.name, 'sha256': sha}, license=entry.get('license', 'mit'))
    info['dataset'] = dataset or _dataset_name(args) or (entry.get('dataset') if released else None)
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
        if released:
            info['metrics'] = entry['metrics']
        else:
            _logger.warning(f'{ckpt} is not the file hub/manifest.json lists for {name}.{tag} (its sha256 is unknown '
                            f'or differs): the released metrics are left out of the card')
    if args:
        from timm.data import resolve_data_config
        info['recipe'] = _public_recipe(args)
        info['base_model'] = _base_model(name, args)
        info['data_config'] = resolve_data_config(args, model=model)
    info['label_names'] = dataset_label_names(info['dataset'], model.num_classes, args)
    return model, info


def check_repo_id(repo_id: str) -> None:
    """huggingface_hub's own repo id check (``validate_repo_id``), plus the ORG/ a repo to publish to needs."""
    from huggingface_hub.utils import validate_repo_id
    validate_repo_id(repo_id)  # HFValidationError, a ValueError, says what to change
    if '/' not in repo_id:
        raise ValueError(f'--repo-id must be ORG/NAME (your user or organisation, then the repo name), got {repo_id!r}')


def _hub_unreachable(error: BaseException) -> bool:
    """True for the transport errors huggingface_hub lets through when the Hub cannot be reached."""
    kinds = [ConnectionError, TimeoutError]
    for module, names in (('httpx2', ('TransportError',)), ('httpx', ('TransportError',)),
                          ('requests', ('ConnectionError', 'Timeout')),
                          ('huggingface_hub.errors', ('OfflineModeIsEnabled',))):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        kinds += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return isinstance(error, tuple(kinds))


def upload_folder(
        folder: Path,
        repo_id: str,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        force: bool = False,
) -> Any:
    """Create the repo (and branch) if needed and upload ``folder``; existing card/weights need ``force``."""
    try:
        return _upload(folder, repo_id, private, revision, commit_message, force)
    except Exception as e:
        if _hub_unreachable(e):
            raise ConnectionError(
                f'the Hugging Face Hub cannot be reached (offline?) to upload {folder} to {repo_id} '
                f'({type(e).__name__}: {" ".join(str(e).split())}); check the network and retry, or keep the folder '
                f'(--dry-run --out DIR) and upload it later') from e
        raise


def _upload(folder: Path, repo_id: str, private: bool, revision: Optional[str], commit_message: Optional[str],
            force: bool) -> Any:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError
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
        license: Optional[str] = None,
) -> Path:
    """Build the Hub folder of ``source`` (in ``out`` or a temp folder) and, unless ``dry_run``, upload it.

    ``record``: also list the weights as a pretrained tag in hub/manifest.json (after a successful upload).
    """
    if dry_run and not out:
        raise ValueError('--dry-run writes the repo folder to --out DIR; pass --out')
    if dry_run and record:
        raise ValueError('--record lists published weights; drop --dry-run (or --record)')
    check_repo_id(repo_id)
    if out:
        check_out_dir(Path(out), force, sources=[Path(source)])
    model, info = load_publish_source(source, repo_id, model_name=model_name, use_ema=use_ema, dataset=dataset)
    if record:
        _check_record(model, info)
    fields = dict(tag=info.get('tag'), metrics=info.get('metrics'), dataset=info.get('dataset'),
                  license=license or info.get('license', 'mit'), source=info.get('source'), recipe=info.get('recipe'),
                  base_model=info.get('base_model'),
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
        dataset=args.dataset, record=args.record, license=args.license)
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
    p.add_argument('--commit-message', default=None, help='Hub commit message (default: Add <name> weights)')
    p.add_argument('--force', action='store_true', help='replace an existing --out folder or card/weights on the Hub')
    p.add_argument('--no-ema', action='store_true', help='publish state_dict, not state_dict_ema')
    p.add_argument('--model', default=None, help='model name when the checkpoint does not record it')
    p.add_argument('--dataset', default=None,
                   help="Hub dataset id for the card (default: args.yaml's --dataset name, e.g. cifar10 for "
                        "torch/cifar10; a folder dataset has none)")
    p.add_argument('--license', default=None, help="the weights' license (default: mit, or the manifest's)")
    p.add_argument('--record', action='store_true',
                   help='list the weights as pretrained tag <model>.<tag> in hub/manifest.json (source checkout)')
    p.set_defaults(func=_run)
