"""Training loop, COCO evaluation (pycocotools) and atomic checkpoints for the detectors."""
import logging
import math
import os
import time
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import AverageMeter, reduce_tensor
from torch import nn
from torchvision.ops import box_convert

from .._io import atomic_write
from .data import require_pycocotools
from .models import create_detection_model, detector_kwargs

__all__ = ['train_one_epoch', 'predict_coco_results', 'coco_evaluate', 'save_checkpoint', 'load_checkpoint',
           'load_detector', 'to_device']

_logger = logging.getLogger(__name__)

_TARGET_KEYS = ('boxes', 'labels', 'masks')


def to_device(images: Iterable[torch.Tensor], targets: Iterable[Dict[str, Any]], device: torch.device):
    """Images and the tensors the detector's losses read, on ``device``."""
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items() if k in _TARGET_KEYS} for t in targets]
    return images, targets


def train_one_epoch(
        model: nn.Module,
        loader: Iterable,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any,
        scaler: torch.amp.GradScaler,
        device: torch.device,
        epoch: int,
        amp: bool = False,
        log_interval: int = 20,
        distributed: bool = False,
        log: bool = True,
) -> Dict[str, float]:
    """One epoch; the scheduler steps per iteration. Returns the epoch's mean of each loss and their sum.

    Losses are averaged over processes when ``distributed``; ``log`` (the main process) logs them.
    """
    model.train()
    meters: Dict[str, AverageMeter] = {}
    num_batches = len(loader)
    start = time.time()
    for i, (images, targets) in enumerate(loader):
        images, targets = to_device(images, targets, device)
        with torch.autocast(device.type, enabled=amp):
            loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
        if not math.isfinite(loss.item()):
            parts = {k: v.item() for k, v in loss_dict.items()}
            raise FloatingPointError(f'Loss is {loss.item()} at epoch {epoch} iteration {i} ({parts}): '
                                     f'lower the learning rate or lengthen the warmup')
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        lr_scheduler.step()

        losses = dict(loss=loss.detach(), **{k: v.detach() for k, v in loss_dict.items()})
        if distributed:
            losses = {k: reduce_tensor(v, dist.get_world_size()) for k, v in losses.items()}
        for k, v in losses.items():
            meters.setdefault(k, AverageMeter()).update(v.item(), len(images))
        if log and (i % max(log_interval, 1) == 0 or i == num_batches - 1):
            parts = '  '.join(f'{k}: {m.val:.4f} ({m.avg:.4f})' for k, m in meters.items())
            _logger.info(
                f"Train: {epoch} [{i:>4d}/{num_batches} ({100. * i / max(num_batches - 1, 1):>3.0f}%)]  {parts}  "
                f"LR: {optimizer.param_groups[0]['lr']:.3e}  Time: {time.time() - start:.1f}s")
    return {k: m.avg for k, m in meters.items()}


@torch.inference_mode()
def predict_coco_results(
        model: nn.Module, loader: Iterable, device: torch.device, amp: bool = False,
) -> Dict[int, List[Dict[str, Any]]]:
    """Detections per image id in COCO results format (XYWH boxes, RLE masks at mask > 0.5)."""
    from pycocotools import mask as mask_util

    model.eval()
    results: Dict[int, List[Dict[str, Any]]] = {}
    for images, targets in loader:
        images = [img.to(device, non_blocking=True) for img in images]
        with torch.autocast(device.type, enabled=amp):
            outputs = model(images)
        for out, target in zip(outputs, targets):
            out = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in out.items()}
            boxes = box_convert(out['boxes'], 'xyxy', 'xywh').tolist()
            dets = [
                {'image_id': target['image_id'], 'category_id': int(label), 'bbox': box, 'score': float(score)}
                for box, label, score in zip(boxes, out['labels'], out['scores'])]
            if 'masks' in out and len(dets):
                binary = (out['masks'][:, 0] > 0.5).numpy().astype(np.uint8)
                rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
                for det, rle in zip(dets, rles):
                    det['segmentation'] = dict(rle, counts=rle['counts'].decode('ascii'))
            results[target['image_id']] = dets
    return results


def gather_results(results: Dict[int, List[Dict[str, Any]]], distributed: bool) -> Dict[int, List[Dict[str, Any]]]:
    """All ranks' detections (the distributed sampler's padding repeats images: keyed by image id)."""
    if not distributed:
        return results
    parts: List[Optional[Dict[int, List[Dict[str, Any]]]]] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, results)
    merged: Dict[int, List[Dict[str, Any]]] = {}
    for part in parts:
        merged.update(part)
    return merged


def coco_evaluate(coco_gt: Any, results: Dict[int, List[Dict[str, Any]]], iou_types: Iterable[str]) -> Dict[str, float]:
    """COCO AP with pycocotools for each IoU type ('bbox', 'segm'): ``{'bbox_ap': .., 'bbox_ap50': .., ...}``."""
    require_pycocotools()
    from pycocotools.cocoeval import COCOeval

    dets = [d for image_dets in results.values() for d in image_dets]
    metrics: Dict[str, float] = {}
    for iou_type in iou_types:
        if not dets:
            _logger.warning(f'No detections: {iou_type} AP is 0')
            stats = [0.0] * 12
        else:
            drop = 'bbox' if iou_type == 'segm' else 'segmentation'  # loadRes derives area from what is left
            coco_dt = coco_gt.loadRes([{k: v for k, v in d.items() if k != drop} for d in dets])
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.params.imgIds = sorted(results)
            evaluator.evaluate()
            evaluator.accumulate()
            _logger.info(f'COCO {iou_type} evaluation:')
            evaluator.summarize()
            stats = [max(float(s), 0.0) for s in evaluator.stats]  # -1 = no ground truth of that size
        metrics.update({f'{iou_type}_ap': stats[0], f'{iou_type}_ap50': stats[1], f'{iou_type}_ap75': stats[2]})
    return metrics


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    """``torch.save`` written atomically: never a half-written checkpoint."""
    with atomic_write(path) as f:
        torch.save(state, f)


_MODEL_KEYS = ('model', 'model_config')  # what rebuilds the detector
_TRAINING_KEYS = ('optimizer', 'lr_scheduler', 'scaler', 'epoch')  # what continues its training


def load_checkpoint(path: str, resume: bool = False) -> Dict[str, Any]:
    """A ``detect train`` checkpoint as a dict (with its training state when ``resume``), or an error naming the file
    and what it is not."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Checkpoint {path!r} not found')
    advice = 'pass the last.pth written by `eca-timm detect train`'
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pickle, zip, EOF, KeyError or IndexError on a text file... (the cause under --debug)
        raise ValueError(f'{path!r} is not a readable PyTorch checkpoint ({type(e).__name__}): {advice}') from e
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path!r} is not an `eca-timm detect train` checkpoint (it holds a {type(ckpt).__name__}, '
                         f'not a dict with model and model_config): {advice}')
    lacking = [k for k in _MODEL_KEYS if k not in ckpt]
    if lacking:
        raise ValueError(f"{path!r} is not an `eca-timm detect train` checkpoint (it lacks {', '.join(lacking)}): "
                         f"{advice}")
    lacking = [k for k in _TRAINING_KEYS if k not in ckpt] if resume else []
    if lacking:
        raise ValueError(f"{path!r} cannot resume training: it lacks {', '.join(lacking)} (written by `detect train` "
                         f"to each epoch's last.pth): pass the last.pth of the run to continue")
    return ckpt


def load_detector(checkpoint: str, device: torch.device) -> tuple:
    """Detector and checkpoint dict of a ``detect train`` checkpoint.

    Checkpoints written before unknown detector arguments were refused may hold one that torchvision ignored then:
    it is left out again, with a warning.
    """
    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt['model_config']
    accepted = detector_kwargs(cfg['name'])
    kwargs = {k: v for k, v in cfg['kwargs'].items() if k in accepted}
    ignored = sorted(set(cfg['kwargs']) - set(kwargs))
    if ignored:
        _logger.warning(f"{checkpoint}: {cfg['name']} ignores {', '.join(ignored)}, which torchvision ignored when "
                        f"it was trained (not an argument of the detector; `detect train` refuses it now)")
    model = create_detection_model(cfg['name'], num_classes=cfg['num_classes'], frozen_bn=cfg['frozen_bn'], **kwargs)
    try:
        model.load_state_dict(ckpt['model'])
    except RuntimeError as e:  # missing / unexpected keys, other shapes: the file was changed after training
        raise ValueError(f"{checkpoint!r}: its weights do not fit the {cfg['name']} that its model_config builds "
                         f"({e})") from e
    return model.to(device).eval(), ckpt
