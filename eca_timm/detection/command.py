"""``eca-timm detect train|eval|predict``: COCO-format training, COCO AP evaluation and drawn predictions.

Each training run writes to its own folder under ``--output`` (``run_folder``: named as timm's train.py does);
``--resume`` continues a run in its folder. Bad options and data are refused before any file is written: numeric
options are checked for type and range (from the command line and a recipe alike), ``--model-kwargs`` items are
timm's KEY=VALUE.

Training options come from ``DEFAULTS``, then a recipe (``--config`` YAML whose keys are the option names with
underscores), then the command line. ``torchrun --nproc-per-node N -m eca_timm.cli detect train ...`` trains
on N GPUs (torch.distributed initialised from the environment, one process per GPU).
"""
import argparse
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
import yaml
from timm.utils import ParseKwargs, random_seed, update_summary
from timm.utils.distributed import init_distributed_device_so
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from .._io import atomic_write, check_writable, read_yaml_mapping, write_json
from .data import check_num_classes, collate_detection, load_coco_detection
from .engine import (
    coco_evaluate, gather_results, load_checkpoint, load_detector, predict_coco_results, save_checkpoint,
    train_one_epoch)
from .models import DETECTION_MODELS, check_detector_kwargs, check_weights_backbone, create_detection_model
from .predict import predict
from .run_folder import check_resumed_summary, make_run_folder, plan_run_folder

__all__ = ['DEFAULTS', 'OPTION_RANGES', 'ModelKwargs', 'check_options', 'register', 'train', 'evaluate', 'predict',
           'load_detector']

_logger = logging.getLogger('eca_timm.detection')

# Training defaults: the paper's Mask R-CNN 1x schedule (mmdetection): total batch 8 at lr 0.01 (scaled
# linearly with the total batch), SGD momentum 0.9, weight decay 1e-4, 12 epochs, lr x0.1 after epochs 8 and 11,
# 500 linear warmup iterations from lr x0.001; COCO image sizes 800/1333.
DEFAULTS: Dict[str, Any] = dict(
    model='maskrcnn_eca_resnet50_fpn', num_classes=None, weights_backbone=None, trainable_backbone_layers=None,
    min_size=800, max_size=1333, model_kwargs={},
    data_dir=None, train_images=None, train_ann=None, val_images=None, val_ann=None,
    epochs=12, batch_size=2, lr=0.01, lr_base_batch=8, momentum=0.9, weight_decay=1e-4, lr_steps=[8, 11],
    lr_gamma=0.1, warmup_iters=500, warmup_factor=0.001, amp=False,
    workers=4, log_interval=20, eval_interval=1, seed=42, output='output/detection', experiment=None, resume=None,
    device='cuda' if torch.cuda.is_available() else 'cpu',
)


# Each numeric option: its type (list: of ints) and lowest value. 0 epochs would train nothing into a new run folder.
OPTION_RANGES: Dict[str, Tuple[type, int]] = dict(
    epochs=(int, 1), batch_size=(int, 1), lr=(float, 0), lr_base_batch=(int, 1), momentum=(float, 0),
    weight_decay=(float, 0), lr_gamma=(float, 0), warmup_iters=(int, 0), warmup_factor=(float, 0), workers=(int, 0),
    log_interval=(int, 1), eval_interval=(int, 0), seed=(int, 0), min_size=(int, 1), max_size=(int, 1),
    lr_steps=(list, 0))
_WHAT = {int: 'an int >= {}', float: 'a number >= {}', list: 'a list of ints >= {}'}


def _fits(value: Any, kind: type, lowest: int) -> bool:
    if kind is list:
        return isinstance(value, list) and all(_fits(v, int, lowest) for v in value)
    return type(value) in ((int,) if kind is int else (int, float)) and value >= lowest  # NaN is not >= lowest


def check_options(args: argparse.Namespace) -> None:
    """A ValueError naming every option of the wrong type or range (a recipe's values never pass argparse)."""
    problems = [f"{name} must be {_WHAT[kind].format(lowest)} (--{name.replace('_', '-')}, or a recipe's {name}), "
                f"got {getattr(args, name)!r}"
                for name, (kind, lowest) in OPTION_RANGES.items() if not _fits(getattr(args, name), kind, lowest)]
    if not isinstance(args.model_kwargs, dict):
        problems.append(f'model_kwargs must be a mapping of detector arguments, got {args.model_kwargs!r}')
    if problems:
        raise ValueError('; '.join(problems))


class ModelKwargs(ParseKwargs):
    """timm's KEY=VALUE parser (values read as Python literals, else kept as text); an item without ``=`` or with a
    key that is no name is a usage error (timm's raises a bare unpacking ValueError)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        for value in values:
            key, equals, _ = value.partition('=')
            if value and not (equals and key.isidentifier()):
                raise argparse.ArgumentError(self, f'expected KEY=VALUE items (e.g. fpn_channels=64), got {value!r}')
        super().__call__(parser, namespace, values, option_string)


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """DEFAULTS < recipe file < options given on the command line (parsers default to None)."""
    config: Dict[str, Any] = {}
    if args.config:
        config = read_yaml_mapping(args.config, 'a detect train recipe (a YAML mapping of option names to values)')
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"Unknown keys in {args.config!r}: {', '.join(unknown)}. "
                             f"Known keys: {', '.join(sorted(DEFAULTS))}")
    given = {k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None}
    return argparse.Namespace(**{**DEFAULTS, **config, **given, 'config': args.config})


def _data_paths(args: argparse.Namespace, split: str) -> Optional[tuple]:
    """(images, annotations) of ``split`` from --{split}-images/--{split}-ann or the COCO 2017 layout of --data-dir."""
    images, ann = getattr(args, f'{split}_images'), getattr(args, f'{split}_ann')
    if args.data_dir:
        name = {'train': 'train2017', 'val': 'val2017'}[split]
        images = images or os.path.join(args.data_dir, name)
        ann = ann or os.path.join(args.data_dir, 'annotations', f'instances_{name}.json')
    if (images is None) != (ann is None):
        raise ValueError(f'Give both --{split}-images and --{split}-ann (or --data-dir with the COCO layout)')
    return (images, ann) if images else None


def _weights_backbone(value: Any) -> Any:
    """``--weights-backbone`` (or a recipe's YAML value) as the Python API's ``weights_backbone``: true / pretrained
    -> True, none / false -> None, else a checkpoint path."""
    if value is None or value is False or str(value).lower() in ('none', 'false'):
        return None
    return True if value is True or str(value).lower() in ('true', 'pretrained') else value


def _model_config(args: argparse.Namespace, num_classes: int) -> Dict[str, Any]:
    """What rebuilds the detector without its backbone weights (stored in checkpoints)."""
    kwargs = dict(args.model_kwargs)
    frozen_bn = kwargs.pop('frozen_bn', _weights_backbone(args.weights_backbone) is not None)
    return dict(name=args.model, num_classes=num_classes, frozen_bn=frozen_bn,
                kwargs=dict(min_size=args.min_size, max_size=args.max_size, **kwargs))


def _build_model(args: argparse.Namespace, model_config: Dict[str, Any]) -> nn.Module:
    """The detector of the options; an unknown detector or backbone argument is a one-line error (ValueError)."""
    try:
        return create_detection_model(
            args.model, num_classes=model_config['num_classes'],
            weights_backbone=_weights_backbone(args.weights_backbone),
            trainable_backbone_layers=args.trainable_backbone_layers, frozen_bn=model_config['frozen_bn'],
            **model_config['kwargs'])
    except TypeError as e:  # the options build the model: its TypeErrors are theirs (the chain stays for --debug)
        raise ValueError(f'--model-kwargs: {e}') from e


def _loader(dataset: Any, args: argparse.Namespace, train: bool, distributed: bool) -> DataLoader:
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train)
    else:
        sampler = RandomSampler(dataset) if train else SequentialSampler(dataset)
    return DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        collate_fn=collate_detection, drop_last=train and len(dataset) >= args.batch_size,
        pin_memory=torch.device(args.device).type == 'cuda', persistent_workers=train and args.workers > 0)


def _init_device(args: argparse.Namespace) -> Dict[str, Any]:
    """timm's distributed setup: torchrun's environment -> process group, one device per process."""
    info = init_distributed_device_so(device=args.device)
    args.device = info['device']
    return info


def _lr_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, iters_per_epoch: int) -> Any:
    """Per-iteration schedule: linear warmup, then x lr_gamma at each epoch of lr_steps."""
    schedulers: List[Any] = [torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[e * iters_per_epoch for e in args.lr_steps], gamma=args.lr_gamma)]
    if args.warmup_iters > 0:
        schedulers.insert(0, torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=args.warmup_factor, total_iters=args.warmup_iters))
    return torch.optim.lr_scheduler.ChainedScheduler(schedulers, optimizer=optimizer)


def _evaluate(model: Any, dataset: Any, args: argparse.Namespace, device: torch.device, distributed: bool,
              iou_types: List[str], is_main: bool) -> Dict[str, float]:
    results = predict_coco_results(model, _loader(dataset, args, False, distributed), device, args.amp)
    results = gather_results(results, distributed)
    return coco_evaluate(dataset.coco, results, iou_types) if is_main else {}


def _iou_types(model_name: str) -> List[str]:
    return ['bbox', 'segm'] if model_name.startswith('maskrcnn') else ['bbox']


def train(args: argparse.Namespace) -> Dict[str, float]:
    """Train (and evaluate each ``eval_interval`` epochs); returns the last evaluation's metrics."""
    args = _resolve(args)
    check_options(args)
    run = plan_run_folder(args.output, args.experiment, args.model, args.min_size, args.resume)
    try:
        check_detector_kwargs(args.model, args.model_kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f'--model-kwargs: {e}') from e
    own = sorted({'min_size', 'max_size', 'num_classes', 'weights_backbone', 'trainable_backbone_layers'} & set(
        args.model_kwargs))
    if own:  # dict(min_size=..., **model_kwargs) would fail on the duplicate
        raise ValueError(f"--model-kwargs: give {own[0]} as --{own[0].replace('_', '-')} (its own option)")
    check_weights_backbone(args.model, _weights_backbone(args.weights_backbone))
    ckpt = load_checkpoint(args.resume, resume=True) if args.resume else None  # before the data is read
    if ckpt is not None and ckpt['epoch'] >= args.epochs:
        raise ValueError(f"{args.resume!r} has trained {ckpt['epoch']} epochs already: pass --epochs above "
                         f"{ckpt['epoch']} to continue it")
    dist_info = _init_device(args)
    distributed, is_main = dist_info['distributed'], dist_info['global_rank'] == 0
    device = torch.device(args.device)
    random_seed(args.seed, dist_info['global_rank'])

    train_paths = _data_paths(args, 'train')
    if train_paths is None:
        raise ValueError('No training data: pass --train-images and --train-ann, or --data-dir')
    val_paths = _data_paths(args, 'val')
    masks = args.model.startswith('maskrcnn')
    train_set = load_coco_detection(*train_paths, train=True, masks=masks)
    val_set = load_coco_detection(*val_paths, train=False, masks=masks) if val_paths else None
    check_resumed_summary(run, evaluates=val_set is not None)
    categories = train_set.coco.dataset['categories']
    num_classes = max(c['id'] for c in categories) + 1 if args.num_classes is None else args.num_classes
    check_num_classes(categories, num_classes, train_paths[1])
    if val_set is not None:
        check_num_classes(val_set.coco.dataset['categories'], num_classes, val_paths[1])

    model_config = _model_config(args, num_classes)
    model = _build_model(args, model_config).to(device)
    total_batch = args.batch_size * dist_info['world_size']
    lr = args.lr * total_batch / args.lr_base_batch
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=args.momentum,
        weight_decay=args.weight_decay)
    train_loader = _loader(train_set, args, True, distributed)
    lr_scheduler = _lr_scheduler(optimizer, args, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == 'cuda')

    start_epoch = 0
    if ckpt is not None:
        if ckpt['model_config'] != model_config:
            raise ValueError(f"Cannot resume from {args.resume!r}: it holds {ckpt.get('model_config')}, "
                             f'these options build {model_config}')
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        lr_scheduler.load_state_dict(ckpt['lr_scheduler'])
        scaler.load_state_dict(ckpt['scaler'])
        start_epoch = ckpt['epoch']
        _logger.info(f'Resumed from {args.resume} after epoch {start_epoch}')
    ddp_model = DistributedDataParallel(
        model, device_ids=[device] if device.type == 'cuda' else None) if distributed else model

    if is_main:
        _logger.info(f'{args.model}: {num_classes} classes, {len(train_set)} training images, total batch '
                     f'{total_batch}, lr {lr:g}, {args.epochs} epochs of {len(train_loader)} iterations')
        out = make_run_folder(run)
        _logger.info(f"{'Continuing the run in' if run.resumed else 'Run folder'}: {out}")
        with atomic_write(os.path.join(out, f'args-resume-{start_epoch}.yaml' if run.resumed else 'args.yaml')) as f:
            f.write(yaml.safe_dump(vars(args)).encode())  # a resume keeps the run's first arguments beside its own
    metrics: Dict[str, float] = {}
    for epoch in range(start_epoch, args.epochs):
        if distributed:
            train_loader.sampler.set_epoch(epoch)
        train_metrics = train_one_epoch(
            ddp_model, train_loader, optimizer, lr_scheduler, scaler, device, epoch, amp=args.amp,
            log_interval=args.log_interval, distributed=distributed, log=is_main)
        last = epoch + 1 == args.epochs
        eval_metrics: Dict[str, Any] = {}
        if val_set is not None and (last or (args.eval_interval and (epoch + 1) % args.eval_interval == 0)):
            eval_metrics = _evaluate(model, val_set, args, device, distributed, _iou_types(args.model), is_main)
            metrics = eval_metrics
        elif val_set is not None:  # same summary.csv columns every epoch
            eval_metrics = {f'{t}_{m}': '' for t in _iou_types(args.model) for m in ('ap', 'ap50', 'ap75')}
        if is_main:
            save_checkpoint(dict(
                model=model.state_dict(), optimizer=optimizer.state_dict(),
                lr_scheduler=lr_scheduler.state_dict(), scaler=scaler.state_dict(), epoch=epoch + 1,
                model_config=model_config, categories=categories, metrics=eval_metrics,
                args={k: v for k, v in vars(args).items() if k != 'func'}), os.path.join(out, 'last.pth'))
            summary = os.path.join(out, 'summary.csv')  # a resumed run appends below the header it has
            update_summary(epoch, train_metrics, eval_metrics, summary, lr=optimizer.param_groups[0]['lr'],
                           write_header=not os.path.isfile(summary) or os.path.getsize(summary) == 0)
    if distributed:
        torch.distributed.destroy_process_group()
    return metrics


def evaluate(args: argparse.Namespace) -> Dict[str, float]:
    """COCO box (and mask) AP of a checkpoint on a COCO-format dataset."""
    if args.metrics_file:
        check_writable(args.metrics_file, '--metrics-file')  # before any work
    dist_info = _init_device(args)
    distributed, is_main = dist_info['distributed'], dist_info['global_rank'] == 0
    device = torch.device(args.device)
    model, ckpt = load_detector(args.checkpoint, device)
    val_paths = _data_paths(args, 'val')
    if val_paths is None:
        raise ValueError('No evaluation data: pass --val-images and --val-ann, or --data-dir')
    cfg = ckpt['model_config']
    dataset = load_coco_detection(*val_paths, train=False, masks='segm' in _iou_types(cfg['name']))
    check_num_classes(dataset.coco.dataset['categories'], cfg['num_classes'], val_paths[1])
    metrics = _evaluate(model, dataset, args, device, distributed, _iou_types(cfg['name']), is_main)
    if is_main:
        print(json.dumps(metrics, indent=2))
        if args.metrics_file:
            write_json(args.metrics_file, metrics)
    if distributed:
        torch.distributed.destroy_process_group()
    return metrics


def _run(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        fn(args)
        return 0
    return run


def _run_predict(args: argparse.Namespace) -> int:
    """Exit status 1 when an image could not be read (the others are drawn and listed all the same)."""
    return 1 if predict(args)['failed'] else 0


def _add_data_args(p: argparse.ArgumentParser, splits: List[str]) -> None:
    p.add_argument('--data-dir', help='COCO 2017 layout: train2017/, val2017/, annotations/instances_*.json')
    for split in splits:
        p.add_argument(f'--{split}-images', help=f'{split} image folder (the annotation file names are relative to it)')
        p.add_argument(f'--{split}-ann', help=f'{split} COCO instances JSON')


TRAIN_DESCRIPTION = """Train a torchvision detector on an ECA-ResNet FPN backbone on COCO-format data.

Each option's value comes from the built-in default (the paper's Mask R-CNN 1x schedule, shown below), then a
recipe (--config YAML whose keys are the option names with underscores), then the command line.
Multi-GPU: torchrun --nproc-per-node N -m eca_timm.cli detect train ... (one process per GPU).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        'detect', help='train, evaluate and run ECA-ResNet Mask/Faster R-CNN on COCO-format data')
    sub = parser.add_subparsers(dest='detect_command', required=True)

    t = sub.add_parser('train', help='train a detector (DDP under torchrun)', description=TRAIN_DESCRIPTION)
    t.add_argument('--config', help='recipe YAML (keys: option names with underscores), e.g. '
                                    'train_configs/coco/maskrcnn_eca_resnet50_fpn_1x.yaml')
    t.add_argument('--model', choices=list(DETECTION_MODELS), help=f"default {DEFAULTS['model']}")
    t.add_argument('--num-classes', type=int, help='classes incl. background (default: highest category id + 1)')
    t.add_argument('--weights-backbone', help="as the builders' weights_backbone: a checkpoint file of the backbone "
                                              "(e.g. the release file eca_resnet50_k3557.pth.tar), a folder written "
                                              "by `eca-timm convert`, 'true' (True: timm's ImageNet weights, once "
                                              "published on the Hub; 'pretrained' also works), or 'none' (None; the "
                                              "default: random init)")
    t.add_argument('--trainable-backbone-layers', type=int, help='0-5 (default 3 with ImageNet weights, else 5)')
    t.add_argument('--min-size', type=int, help=f"shorter image side (default {DEFAULTS['min_size']})")
    t.add_argument('--max-size', type=int, help=f"longest image side (default {DEFAULTS['max_size']})")
    t.add_argument('--model-kwargs', nargs='*', action=ModelKwargs,
                   help='detector kwargs, e.g. fpn_channels=64 box_batch_size_per_image=128')
    _add_data_args(t, ['train', 'val'])
    for name, type_ in (('epochs', int), ('batch-size', int), ('lr', float), ('lr-base-batch', int),
                        ('momentum', float), ('weight-decay', float), ('lr-gamma', float), ('warmup-iters', int),
                        ('warmup-factor', float), ('workers', int), ('log-interval', int),
                        ('eval-interval', int), ('seed', int)):
        t.add_argument(f'--{name}', type=type_, help=f"default {DEFAULTS[name.replace('-', '_')]}")
    t.add_argument('--lr-steps', type=int, nargs='+',
                   help=f"epochs after which lr *= lr_gamma (default {DEFAULTS['lr_steps']})")
    t.add_argument('--amp', action=argparse.BooleanOptionalAction, help='mixed precision (CUDA)')
    t.add_argument('--output', help=f"parent folder of the run folders (default {DEFAULTS['output']}), as timm's "
                                    f"train.py: each run writes last.pth, summary.csv, args.yaml to its own")
    t.add_argument('--experiment', help='run folder name under --output (default: <date>-<time>-<model>-<min '
                                        'size>, as timm\'s train.py); a folder already holding files is refused')
    t.add_argument('--resume', help="continue the run of this last.pth, in its folder (appending to its summary.csv)")
    t.add_argument('--device', help=f"default {DEFAULTS['device']}")
    t.set_defaults(func=_run(train))

    e = sub.add_parser('eval', help='COCO box/mask AP of a checkpoint')
    e.add_argument('--checkpoint', required=True, help='a `detect train` checkpoint (last.pth)')
    _add_data_args(e, ['val'])
    e.add_argument('--batch-size', type=int, default=2, help='images per step')
    e.add_argument('--workers', type=int, default=4, help='data loading processes')
    e.add_argument('--amp', action='store_true', help='mixed precision (CUDA)')
    e.add_argument('--device', default=DEFAULTS['device'], help="'cuda', 'cuda:N' or 'cpu'")
    e.add_argument('--metrics-file', help='also write the metrics JSON here')
    e.set_defaults(func=_run(evaluate))

    p = sub.add_parser('predict', help='draw detections (boxes, masks) on images, saved as PNG')
    p.add_argument('images', nargs='+', help='image files, or folders of them (.png/.jpg/.jpeg, subfolders too)')
    p.add_argument('--checkpoint', required=True, help='a `detect train` checkpoint (last.pth)')
    p.add_argument('--output-dir', required=True, help='where <image name>.png (in the images\' folders below '
                                                       'their common one) and predictions.json go; an input image or '
                                                       'a file predict did not write there is never replaced')
    p.add_argument('--score-threshold', type=float, default=0.5, help='draw detections scoring at least this (0-1)')
    p.add_argument('--device', default=DEFAULTS['device'], help="'cuda', 'cuda:N' or 'cpu'")
    p.set_defaults(func=_run_predict)
