"""``detect predict``: a checkpoint's detections drawn on images (one PNG each) and listed in predictions.json.

Images are files, or folders of them (timm's image extensions, in subfolders too; hidden files and the output
folder left out). Outputs keep the images' folders below the folder they have in common, so ``a/img.png`` and
``b/img.png`` draw to ``a/img.png`` and ``b/img.png`` in the output folder; names that still clash (``img.jpg``
beside ``img.png``) get ``-1``, ``-2``... Before any work, an output that would replace an input image, or a file
that no ``detect predict`` drew (the PNG's Software field says so), is refused. An image that cannot be read is
skipped with a warning and listed under ``failed``: the others are still drawn and listed, and the command exits with
status 1. Every file is written atomically. Detections are drawn with torchvision's drawing utilities, one colour per
label, on PNGs marked as drawn here.
"""
import json
import logging
import os
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
from PIL import Image, PngImagePlugin
from timm.data import get_img_extensions
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from .._io import atomic_write, write_json
from .data import read_rgb
from .engine import load_detector

__all__ = ['DRAWN_BY', 'PALETTE', 'check_outputs', 'draw_detections', 'image_files', 'is_drawing', 'label_color',
           'output_names', 'predict', 'write_png']

_logger = logging.getLogger('eca_timm.detection')

PREDICTIONS = 'predictions.json'
# The PNG 'Software' text field of every drawing: how a later `detect predict` knows which files it may replace.
DRAWN_BY = 'eca-timm detect predict'

# matplotlib's tab10 colours, one per label (modulo): the colour of a label's boxes, masks and text.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def label_color(label: int) -> Tuple[int, int, int]:
    """RGB colour used for ``label``."""
    return PALETTE[label % len(PALETTE)]


def draw_detections(
        image: torch.Tensor,
        prediction: Dict[str, torch.Tensor],
        categories: Mapping[int, str],
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        box_width: int = 2,
) -> torch.Tensor:
    """Masks (half transparent) then boxes with 'name score' labels on a uint8 CxHxW image."""
    keep = prediction['scores'] >= score_threshold
    if not keep.any():
        return image
    labels = prediction['labels'][keep].tolist()
    colors = [label_color(label) for label in labels]
    if 'masks' in prediction:
        masks = prediction['masks'][keep][:, 0] > mask_threshold
        image = draw_segmentation_masks(image, masks, alpha=0.5, colors=colors)
    names = [f'{categories.get(label, label)} {score:.2f}'
             for label, score in zip(labels, prediction['scores'][keep].tolist())]
    return draw_bounding_boxes(image, prediction['boxes'][keep], labels=names, colors=colors, width=box_width)


def write_png(image: torch.Tensor, path: str) -> None:
    """Encode a uint8 CxHxW image as PNG (Software: ``DRAWN_BY``) and write it atomically."""
    info = PngImagePlugin.PngInfo()
    info.add_text('Software', DRAWN_BY)
    with atomic_write(path) as f:
        to_pil_image(image.cpu()).save(f, format='PNG', pnginfo=info)


def is_drawing(path: str) -> bool:
    """Whether ``path`` is a PNG that ``write_png`` wrote (read from its header, not its pixels)."""
    try:
        with Image.open(path) as img:
            return img.format == 'PNG' and img.info.get('Software') == DRAWN_BY
    except (OSError, ValueError, Image.DecompressionBombError):  # not an image at all
        return False


def image_files(paths: Sequence[str], output_dir: str) -> List[str]:
    """The images of ``paths``: files as given, folders as the images in them and their subfolders, sorted (hidden
    files and folders, and ``output_dir`` with its drawings, left out)."""
    extensions = get_img_extensions()  # timm's: .png, .jpg, .jpeg
    out = os.path.realpath(output_dir)
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"Images not found: {', '.join(missing)}")
    files: List[str] = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = []
        for folder, subfolders, names in os.walk(path):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith('.') and
                                   os.path.realpath(os.path.join(folder, d)) != out)
            found += [os.path.join(folder, n) for n in sorted(names)
                      if not n.startswith('.') and os.path.splitext(n)[1].lower() in extensions]
        if not found:
            raise FileNotFoundError(f"Folder {path!r} holds no images ({', '.join(extensions)}, in it or its "
                                    f"subfolders): pass image files or a folder of them")
        files += found
    return files


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


def _is_predictions_file(path: str) -> bool:
    try:
        with open(path, encoding='utf-8') as f:
            content = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and {'checkpoint', 'predictions', 'failed'} <= set(content)


def _listed(paths: Sequence[str]) -> str:
    return ', '.join(repr(p) for p in paths[:3]) + (f' and {len(paths) - 3} more' if len(paths) > 3 else '')


def check_outputs(images: Sequence[str], names: Sequence[str], output_dir: str) -> None:
    """Refuse, before any work, outputs that would replace an input image or a file no ``detect predict`` wrote
    (an earlier run's drawings and predictions.json are replaced)."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f'--output-dir {output_dir!r} is a file: pass a folder for the drawings')
    inputs = {(st.st_dev, st.st_ino): path for path, st in zip(images, map(os.stat, images))}
    replaced, foreign = [], []
    for name in [*names, PREDICTIONS]:
        target = os.path.join(output_dir, name)
        if not os.path.lexists(target):
            continue
        st = os.stat(target) if os.path.exists(target) else None
        if st is not None and (st.st_dev, st.st_ino) in inputs:  # hard links and case-insensitive disks too
            replaced.append(inputs[st.st_dev, st.st_ino])
        elif not (_is_predictions_file(target) if name == PREDICTIONS else is_drawing(target)):
            foreign.append(target)
    if replaced:
        raise FileExistsError(
            f'--output-dir {output_dir!r} holds the input images {_listed(replaced)}: their drawings would replace '
            f"them. Pass a folder of its own for the drawings, e.g. --output-dir "
            f"{os.path.join(output_dir, 'detections')!r}")
    if foreign:
        raise FileExistsError(f'--output-dir {output_dir!r} already holds {_listed(foreign)}, which `detect predict` '
                              f'did not write: pass another --output-dir, or move them')


def predict(args: Any) -> Dict[str, Any]:
    """Draw the detections of ``args.checkpoint`` on ``args.images`` (files or folders) into ``args.output_dir``.

    Returns what predictions.json holds: ``predictions`` (per image: ``image`` as found, ``output`` relative to
    the output folder, ``detections``) and ``failed`` (``image``, ``error``) for the images that could not be read.
    """
    if not 0 <= args.score_threshold <= 1:
        raise ValueError(f'--score-threshold must be in [0, 1] (detection scores are probabilities), got '
                         f'{args.score_threshold}')
    images = image_files(args.images, args.output_dir)
    names = output_names(images)
    check_outputs(images, names, args.output_dir)
    device = torch.device(args.device)
    model, ckpt = load_detector(args.checkpoint, device)
    categories = {c['id']: c['name'] for c in ckpt.get('categories', [])}
    result: Dict[str, Any] = dict(checkpoint=args.checkpoint, score_threshold=args.score_threshold,
                                  predictions=[], failed=[])
    for path, name in zip(images, names):
        try:
            image = pil_to_tensor(read_rgb(path))
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
    json_path = os.path.join(args.output_dir, PREDICTIONS)
    write_json(json_path, result)
    if result['failed']:
        _logger.warning(f"{len(result['failed'])} of {len(images)} images could not be read (listed under "
                        f"'failed' in {json_path})")
    return result
