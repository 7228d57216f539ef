"""``detect predict``: a checkpoint's detections drawn on images (one PNG each) and listed in predictions.json.

Outputs keep the images' folders below the folder they have in common, so ``a/img.png`` and ``b/img.png`` draw
to ``a/img.png`` and ``b/img.png`` in the output folder; names that still clash (``img.jpg`` beside ``img.png``)
get ``-1``, ``-2``... An image that cannot be read is skipped with a warning and listed under ``failed``: the
others are still drawn and listed, and the command exits with status 1. Every file is written atomically.
"""
import json
import logging
import os
from typing import Any, Dict, List, Sequence

import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from .._io import atomic_write
from .draw import draw_detections, write_png
from .engine import load_detector

__all__ = ['output_names', 'predict']

_logger = logging.getLogger('eca_timm.detection')


def output_names(paths: Sequence[str]) -> List[str]:
    """A distinct PNG name per image, relative to the output folder (distinct on case-insensitive disks too)."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    common = os.path.commonpath(folders) if folders else ''
    names: List[str] = []
    taken = set()
    for path, folder in zip(paths, folders):
        stem = os.path.normpath(os.path.join(
            os.path.relpath(folder, common), os.path.splitext(os.path.basename(path))[0]))
        name, count = f'{stem}.png', 0
        while name.lower() in taken:
            count += 1
            name = f'{stem}-{count}.png'
        taken.add(name.lower())
        names.append(name)
    return names


def _read_image(path: str) -> torch.Tensor:
    with Image.open(path) as img:
        return pil_to_tensor(img.convert('RGB'))


def predict(args: Any) -> Dict[str, Any]:
    """Draw the detections of ``args.checkpoint`` on ``args.images`` into ``args.output_dir``.

    Returns what predictions.json holds: ``predictions`` (per image: ``image`` as given, ``output`` relative to
    the output folder, ``detections``) and ``failed`` (``image``, ``error``) for the images that could not be read.
    """
    missing = [p for p in args.images if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"Images not found: {', '.join(missing)}")
    device = torch.device(args.device)
    model, ckpt = load_detector(args.checkpoint, device)
    categories = {c['id']: c['name'] for c in ckpt.get('categories', [])}
    result: Dict[str, Any] = dict(checkpoint=args.checkpoint, score_threshold=args.score_threshold,
                                  predictions=[], failed=[])
    for path, name in zip(args.images, output_names(args.images)):
        try:
            image = _read_image(path)
        except (OSError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
            error = f'cannot read it as an image ({e.__class__.__name__}: {e})'
            _logger.warning(f'Skipped {path}: {error}')
            result['failed'].append(dict(image=path, error=error))
            continue
        with torch.inference_mode():
            pred = {k: v.cpu() for k, v in model([image.to(device).float() / 255])[0].items()}
        out_path = os.path.join(args.output_dir, name)
        write_png(draw_detections(image, pred, categories, args.score_threshold), out_path)
        keep = pred['scores'] >= args.score_threshold
        detections = [
            dict(box=box, label=label, category=categories.get(label, str(label)), score=score)
            for box, label, score in zip(pred['boxes'][keep].tolist(), pred['labels'][keep].tolist(),
                                         pred['scores'][keep].tolist())]
        result['predictions'].append(dict(image=path, output=name, detections=detections))
        _logger.info(f'{path}: {len(detections)} detections -> {out_path}')
    json_path = os.path.join(args.output_dir, 'predictions.json')
    with atomic_write(json_path) as f:
        f.write(json.dumps(result, indent=2).encode())
    if result['failed']:
        _logger.warning(f"{len(result['failed'])} of {len(args.images)} images could not be read (listed under "
                        f"'failed' in {json_path})")
    return result
