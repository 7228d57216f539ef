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

from .._io import read_json, read_summary, read_train_args
from ..models._state_dict import remap_checkpoint
from .card import WeightsInfo, check_card_fields
from .checkpoint import check_model_name, fit_exactly, read_checkpoint
from .hub_folder import check_out_dir, dataset_label_names, folder_source, write_hub_folder
from .manifest import check_record, record_in_manifest, released_info
from .upload import PROTECTED_FILES, upload_folder

__all__ = ['PROTECTED_FILES', 'load_publish_source', 'publish', 'register', 'upload_folder']

_logger = logging.getLogger(__name__)

# timm's torchvision datasets with a train flag: every split but train is their test set.
TORCHVISION_TEST_SPLIT = ('cifar10', 'cifar100', 'mnist', 'kmnist', 'fashion_mnist')


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


def _create(model_name: str, state_dict: Dict[str, torch.Tensor], ckpt: Path, **kwargs: Any) -> nn.Module:
    """The model with ``state_dict`` loaded, all of it; the classes and input channels args.yaml does not give are
    read off the weights (the classifier's rows, the first conv's input channels)."""
    import timm
    model = timm.create_model(model_name, **kwargs)
    remapped = remap_checkpoint(state_dict, model)
    cfg, target = model.pretrained_cfg, model.state_dict()
    inferred = {}
    for kwarg, layer, dim in (('num_classes', cfg.get('classifier'), 0), ('in_chans', cfg.get('first_conv'), 1)):
        theirs, ours = remapped.get(f'{layer}.weight'), target.get(f'{layer}.weight')
        if kwarg not in kwargs and theirs is not None and ours is not None and theirs.dim() == ours.dim() and \
                theirs.shape[dim] != ours.shape[dim]:
            inferred[kwarg] = int(theirs.shape[dim])
    if inferred:
        model = timm.create_model(model_name, **kwargs, **inferred)
    fix = (f'the weights do not match args.yaml (num_classes, in_chans / input_size, model_kwargs): fix args.yaml, '
           f'or publish the checkpoint file alone with --model {model_name}')
    model.load_state_dict(fit_exactly(state_dict, model, ckpt, fix), strict=True)
    return model.eval()


def _repo_tag(repo: str, arch: str) -> Optional[str]:
    """The pretrained tag a repo named ``ORG/<arch>.<tag>`` holds, else None."""
    name = repo.split('/')[-1]
    return (name[len(arch) + 1:] or None) if name.startswith(f'{arch}.') else None


def _eval_split(args: Dict[str, Any]) -> str:
    """The dataset split train.py evaluated on: its val_split, but a torchvision dataset's test set for any split
    other than train (timm's ``create_dataset``)."""
    split = args.get('val_split') or 'validation'
    name = (args.get('dataset') or '').lower()
    if name.startswith('torch/') and name.split('/', 1)[1] in TORCHVISION_TEST_SPLIT and split not in ('train',
                                                                                                       'training'):
        return 'test'
    return split


def _data_note(args: Dict[str, Any]) -> Optional[str]:
    """Image counts of a folder dataset that is still on disk (train.py's train and validation split folders)."""
    from timm.data.readers.img_extensions import get_img_extensions
    data_dir = args.get('data_dir') or args.get('data')
    if not data_dir or '/' in (args.get('dataset') or ''):
        return None
    extensions = get_img_extensions(as_set=True)
    counts = []
    for split, role in ((args.get('train_split') or 'train', 'training'),
                        (args.get('val_split') or 'validation', 'evaluation')):
        folder = Path(data_dir) / split
        if not folder.is_dir():
            return None
        n = sum(1 for f in folder.rglob('*') if f.suffix.lower() in extensions)
        counts.append(f'{n:,} {role} images ({split}/)')
    return f'a folder dataset: {", ".join(counts)}'


def _converted_folder(src: Path, repo: str, dataset: Optional[str]) -> Tuple[nn.Module, WeightsInfo]:
    """A folder written by ``convert`` or ``publish`` (or downloaded from the Hub): timm's ``local-dir:``."""
    import timm
    config_path = src / 'config.json'
    config = read_json(config_path)
    if not isinstance(config, dict) or not isinstance(config.get('pretrained_cfg'), dict):
        raise ValueError(f'{config_path} is not a timm config.json (no pretrained_cfg); pass a folder written by '
                         f'`eca-timm convert` or `eca-timm publish`')
    arch = check_model_name(config.get('architecture'), f'{config_path}: architecture')
    try:
        model = timm.create_model(f'local-dir:{src}', pretrained=True)
    except RuntimeError as e:  # the plugin's pretrained-load error: unreadable weights
        raise ValueError(f'{src}: the folder\'s weights do not load ({e})') from e
    tag = _repo_tag(repo, arch) or model.pretrained_cfg.get('tag')
    source = folder_source(config)
    # a folder converted from the released file carries the file's sha256: only that ties it to released numbers
    fields = released_info(f'{arch}.{tag}', source.get('file'), source.get('sha256'))
    fields['source'] = fields.get('source') or source or {'file': src.name}
    info = WeightsInfo(tag=tag, **fields)
    info.dataset = dataset or info.dataset
    info.label_names = model.pretrained_cfg.get('label_names')
    return model.eval(), info


def load_publish_source(
        source: str,
        repo: str,
        model_name: Optional[str] = None,
        use_ema: bool = True,
        dataset: Optional[str] = None,
) -> Tuple[nn.Module, WeightsInfo]:
    """The model and card fields of a train.py output folder, a checkpoint file or a converted Hub folder."""
    src = Path(source)
    if src.is_dir() and (src / 'config.json').is_file():
        return _converted_folder(src, repo, dataset)
    args: Dict[str, Any] = {}
    if src.is_dir():
        ckpt = next((src / n for n in ('model_best.pth.tar', 'last.pth.tar') if (src / n).is_file()), None)
        if ckpt is None:
            raise FileNotFoundError(f'{src} has neither model_best.pth.tar nor last.pth.tar (nor config.json)')
        if (src / 'args.yaml').is_file():
            args = read_train_args(src / 'args.yaml')
    elif src.is_file():
        ckpt = src
    else:
        raise FileNotFoundError(f'{src}: no such file or folder')
    checkpoint = read_checkpoint(ckpt)  # one read: the weights, the fields train.py records, the sha256
    meta = checkpoint.meta
    name = model_name or args.get('model') or meta.get('arch')
    if not model_name:
        origin = f"{src / 'args.yaml'}'s model" if args.get('model') else "the checkpoint's arch"
        try:
            check_model_name(name, origin)
        except ValueError as e:
            raise ValueError(f'{ckpt}: cannot tell the model: {e}; pass --model') from e
    ema = use_ema and checkpoint.has_ema
    kwargs = dict(args.get('model_kwargs') or {})
    if args.get('num_classes') is not None:
        kwargs['num_classes'] = args['num_classes']
    if args.get('in_chans') is not None or args.get('input_size'):  # train.py's rule: in_chans, else input_size[0]
        kwargs['in_chans'] = args['in_chans'] if args.get('in_chans') is not None else args['input_size'][0]
    model = _create(name, checkpoint.state_dict(use_ema=ema), ckpt, **kwargs)
    tag = _repo_tag(repo, name)
    released = released_info(f'{name}.{tag}', ckpt.name, checkpoint.sha256)
    info = WeightsInfo(tag=tag, license=released['license'], source={'file': ckpt.name, 'sha256': checkpoint.sha256},
                       eval_split=_eval_split(args), data_note=_data_note(args))
    if src.is_dir() and (src / 'summary.csv').is_file():
        # train.py's summary.csv evaluates the EMA weights when EMA runs on the device, else the model's.
        evaluated_ema = checkpoint.has_ema and not args.get('model_ema_force_cpu')
        if ema == evaluated_ema:
            row = _best_row(src / 'summary.csv', args, meta.get('epoch'))
            epoch = int(row['epoch'])
            of = f" of {args['epochs']}" if args.get('epochs') else ''
            info.metrics = {
                'top1': row['eval_top1'], 'top5': row['eval_top5'],
                'provenance': f"timm train.py evaluation after epoch {epoch + 1}{of} (summary.csv's epoch {epoch}, "
                              f"counted from 0; best checkpoint{', EMA weights' if ema else ''})"}
        else:
            info.results_note = (
                f"summary.csv evaluates the {'EMA' if evaluated_ema else 'non-EMA'} weights, these are the "
                f"{'EMA' if ema else 'non-EMA'} weights, so no results are given "
                f"({'drop --no-ema' if evaluated_ema else 'pass --no-ema'} to publish the evaluated weights).")
            _logger.warning(info.results_note)
    else:  # a checkpoint without its run: the manifest's released numbers, if it is the released file
        for key, value in released.items():
            setattr(info, key, value)
    info.dataset = dataset or _dataset_name(args) or info.dataset
    check_card_fields(info.dataset, None, origin=f"{src / 'args.yaml'}'s dataset" if not dataset else '--dataset')
    if args:
        from timm.data import resolve_data_config
        info.recipe = _public_recipe(args)
        info.base_model = _base_model(name, args)
        info.data_config = resolve_data_config(args, model=model)
    info.label_names = dataset_label_names(info.dataset, model.num_classes, args)
    return model, info


def check_repo_id(repo_id: str) -> None:
    """huggingface_hub's own repo id check (``validate_repo_id``), plus the ORG/ a repo to publish to needs."""
    from huggingface_hub.utils import validate_repo_id
    validate_repo_id(repo_id)  # HFValidationError, a ValueError, says what to change
    if '/' not in repo_id:
        raise ValueError(f'--repo-id must be ORG/NAME (your user or organisation, then the repo name), got {repo_id!r}')


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
        eval_split: Optional[str] = None,
        intended_use: Optional[str] = None,
) -> Path:
    """Build the Hub folder of ``source`` (in ``out`` or a temp folder) and, unless ``dry_run``, upload it.

    ``record``: also list the weights as a pretrained tag in hub/manifest.json (after a successful upload).
    ``eval_split``, ``intended_use``: what the card says of the evaluation data and of the weights' use.
    """
    if dry_run and not out:
        raise ValueError('--dry-run writes the repo folder to --out DIR; pass --out')
    if dry_run and record:
        raise ValueError('--record lists published weights; drop --dry-run (or --record)')
    check_repo_id(repo_id)
    check_card_fields(dataset, license)
    if model_name:
        check_model_name(model_name)
    if out:
        check_out_dir(Path(out), force, sources=[Path(source)])
    model, info = load_publish_source(source, repo_id, model_name=model_name, use_ema=use_ema, dataset=dataset)
    if record:
        check_record(model, info)
    info.license = license or info.license
    info.eval_split = eval_split or info.eval_split
    info.intended_use = intended_use or info.intended_use
    if out:
        folder = write_hub_folder(model, Path(out), repo_id, info, force=force, local_dir=out if dry_run else None)
        if not dry_run:
            upload_folder(folder, repo_id, private, revision, commit_message, force,
                          retry_hint=f'upload the folder kept in {out} with `eca-timm publish {out} --repo-id '
                                     f'{repo_id}`')
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_hub_folder(model, Path(tmp) / repo_id.split('/')[-1], repo_id, info)
            upload_folder(folder, repo_id, private, revision, commit_message, force,
                          retry_hint='publish again; nothing was kept (pass --out DIR to keep the folder and upload '
                                     'it later)')
        folder = Path(f'hf-hub:{repo_id}')
    if record:
        _logger.info(f'recorded {record_in_manifest(repo_id, model, info)} in hub/manifest.json')
    return folder


def _run(args: argparse.Namespace) -> int:
    where = publish(
        args.source, args.repo_id, out=args.out, dry_run=args.dry_run, private=args.private, revision=args.revision,
        commit_message=args.commit_message, force=args.force, use_ema=not args.no_ema, model_name=args.model,
        dataset=args.dataset, record=args.record, license=args.license, eval_split=args.eval_split,
        intended_use=args.intended_use)
    print(f'{"wrote" if args.dry_run else "published"} {where}' + ('' if args.dry_run else f' ({args.repo_id})'))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'publish', help='train.py output folder / checkpoint / converted folder -> Hub repo with a model card')
    p.add_argument(
        'source', help='train.py output folder, a checkpoint file, or a folder written by `eca-timm convert`')
    p.add_argument('--repo-id', required=True, help='ORG/NAME, e.g. my-org/eca_resnet50.my_tag')
    p.add_argument('--out', default=None, help='also write the repo folder here (required with --dry-run)')
    p.add_argument('--dry-run', action='store_true',
                   help="write the folder only, upload nothing (its card loads it with local-dir:)")
    p.add_argument('--private', action='store_true', help='create the repo private')
    p.add_argument('--revision', default=None, help='branch to upload to (created if missing)')
    p.add_argument('--commit-message', default=None, help='Hub commit message (default: Add <name> weights)')
    p.add_argument('--force', action='store_true', help='replace an existing --out folder or card/weights on the Hub')
    p.add_argument('--no-ema', action='store_true', help='publish state_dict, not state_dict_ema')
    p.add_argument('--model', default=None, help='model name when the checkpoint does not record it')
    p.add_argument('--dataset', default=None,
                   help="Hub dataset id for the card (default: args.yaml's --dataset name, e.g. cifar10 for "
                        "torch/cifar10; a folder dataset has none)")
    p.add_argument('--eval-split', default=None,
                   help="the split of --dataset the evaluation images come from (default: args.yaml's val_split; "
                        "test for timm's torchvision datasets)")
    p.add_argument('--intended-use', default=None,
                   help="the card's intended use and limitations paragraph (default: one from the data and results)")
    p.add_argument('--license', default=None, help="the weights' license (default: mit, or the manifest's)")
    p.add_argument('--record', action='store_true',
                   help='list the weights as pretrained tag <model>.<tag> in hub/manifest.json (source checkout)')
    p.set_defaults(func=_run)
