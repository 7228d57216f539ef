"""COCO-format detection data: torchvision's ``CocoDetection`` wrapped for transforms v2, checked up front."""
import json
import logging
import math
import os
import reprlib
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

__all__ = ['load_coco_detection', 'check_num_classes', 'collate_detection', 'require_pycocotools', 'read_rgb']

_logger = logging.getLogger('eca_timm.detection')

_REQUIRED_KEYS = ('images', 'annotations', 'categories')
_ANNOTATION_KEYS = ('image_id', 'category_id', 'bbox')
_NUMBER_TYPES = {int, float}  # JSON numbers; bool is a separate type, so True/False are refused
_REPR = reprlib.Repr()  # values quoted in errors, shortened
_REPR.maxlist, _REPR.maxstring, _REPR.maxother = 8, 40, 40
_POLYGONS_OR_RLE = ('it must be polygons (a list of [x1, y1, x2, y2, ...] lists) or RLE (a dict with counts and '
                    'size)')


# PIL modes of 16-bit greyscale (PNG reads as I;16; older Pillow and TIFF as I): PIL's convert('RGB') clips them at
# 255, which turns nearly every pixel white. 16-bit RGB PNGs are read as RGB already (their high byte).
_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def read_rgb(path: str) -> Image.Image:
    """An image file as 8-bit RGB; 16-bit greyscale is scaled to 8 bit (its high byte), as PIL reads 16-bit RGB."""
    with Image.open(path) as img:
        if img.mode in _SIXTEEN_BIT_MODES:
            high_byte = (np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
            return Image.fromarray(high_byte).convert('RGB')
        return img.convert('RGB')


def require_pycocotools() -> None:
    """Fail with the install command when the optional ``pycocotools`` is missing."""
    try:
        import pycocotools  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "COCO detection data and AP need pycocotools: pip install 'eca-timm[detection]'") from e


def _numbers(values: Any) -> bool:
    """A list of finite ints/floats (checked in C-speed passes: COCO has ~900k annotations)."""
    if not isinstance(values, list) or not set(map(type, values)) <= _NUMBER_TYPES:
        return False
    try:
        return math.isfinite(sum(values))  # NaN or inf anywhere makes the sum non-finite
    except OverflowError:
        return False


def _box_problem(bbox: Any) -> str:
    if not _numbers(bbox) or len(bbox) != 4:
        return f'has bbox {_REPR.repr(bbox)}: a box is [x, y, width, height], 4 numbers'
    if bbox[2] < 0 or bbox[3] < 0:
        return (f'has bbox {_REPR.repr(bbox)} with a negative width or height: a box is [x, y, width, height] '
                f'(not [x1, y1, x2, y2])')
    return ''


def _segmentation_problem(seg: Any, image: Dict[str, Any]) -> str:
    """What pycocotools (mask decoding, mask AP) would fail on: wrong types, no polygon, an RLE of another size."""
    if isinstance(seg, dict):
        counts, size = seg.get('counts'), seg.get('size')
        if not (isinstance(counts, str) or (isinstance(counts, list) and set(map(type, counts)) <= {int})) or not (
                isinstance(size, list) and len(size) == 2 and set(map(type, size)) <= {int}):
            return (f'has RLE segmentation {_REPR.repr(seg)}: RLE is a dict with counts (a string or a list of '
                    f'ints) and size ([height, width])')
        height_width = [image.get('height'), image.get('width')]
        if None not in height_width and size != height_width:
            return (f"has RLE of size {size} but image {image['id']} is {height_width} ([height, width]): encode "
                    f"the mask at the image's size")
        if isinstance(counts, list) and sum(counts) != size[0] * size[1]:
            return f'has RLE counts adding up to {sum(counts)}, not height x width = {size[0] * size[1]}'
        return ''
    if not isinstance(seg, list) or not seg or not all(isinstance(p, list) for p in seg):
        return f'has segmentation {_REPR.repr(seg)}: {_POLYGONS_OR_RLE}'
    for i, polygon in enumerate(seg, 1):
        if not _numbers(polygon):
            return f'has polygon {i} {_REPR.repr(polygon)}: a polygon is a list of numbers [x1, y1, x2, y2, ...]'
    if len(seg[0]) < 6:  # pycocotools fails on a first polygon of 4 numbers or fewer (it takes 4 for a box)
        return f'has polygon 1 {_REPR.repr(seg[0])}: a polygon needs at least 3 points (6 numbers)'
    return ''


def _known(key: Any, table: Any) -> bool:
    try:
        return key in table
    except TypeError:  # a list or dict as an id
        return False


def _annotation_problem(ann: Any, keys: Sequence[str], images: Dict[Any, Dict[str, Any]], category_ids: set,
                        evaluation: bool) -> str:
    """What is wrong with one instance annotation ('' when nothing)."""
    if not isinstance(ann, dict):
        return f'is {_REPR.repr(ann)}, not an object'
    lacking = [k for k in keys if k not in ann]
    if 'segmentation' in lacking:
        why = "Mask R-CNN's mask AP reads it" if evaluation else 'Mask R-CNN trains on masks'
        return f'lacks segmentation ({why}: add them or use a Faster R-CNN model)'
    if lacking:
        return f"lacks {', '.join(lacking)}"
    if not _known(ann['image_id'], images):
        return f"refers to image id {_REPR.repr(ann['image_id'])} not in 'images'"
    if not _known(ann['category_id'], category_ids):
        return f"has category id {_REPR.repr(ann['category_id'])} not in 'categories'"
    problem = _box_problem(ann['bbox'])
    if not problem and 'segmentation' in keys:
        problem = _segmentation_problem(ann['segmentation'], images[ann['image_id']])
    crowd = ann.get('iscrowd', 0)
    if not problem and (type(crowd) not in (int, bool) or crowd not in (0, 1)):
        problem = f"has iscrowd {_REPR.repr(ann['iscrowd'])}: it must be 0 or 1"
    if not problem and evaluation:  # COCOeval reads each ground truth's area
        if 'area' not in ann:
            problem = "lacks area (COCO AP reads it: the object's area in pixels, e.g. of its mask)"
        elif not _numbers([ann['area']]) or ann['area'] < 0:
            problem = f"has area {_REPR.repr(ann['area'])}: it must be a number >= 0 (the object's area in pixels)"
    return problem


def _check_categories(categories: List[Any], annotations: str) -> set:
    """Category ids are the model's labels: ints from 1 up (0 is background). Returns them."""
    if not categories:
        raise ValueError(f"COCO annotation file {annotations!r} lists no categories: add one per class to "
                         f"'categories' (ids from 1 up)")
    for cat in categories:
        if not isinstance(cat, dict) or 'id' not in cat:
            raise ValueError(f"COCO annotation file {annotations!r}: category {_REPR.repr(cat)} lacks an id")
    ids = [cat['id'] for cat in categories]
    for cat in categories:
        name, cat_id = cat.get('name', '?'), cat['id']
        if type(cat_id) is not int:
            raise ValueError(
                f"COCO annotation file {annotations!r}: category {name!r} has id {cat_id!r}, not an int: category "
                f"ids must be ints >= 1 (0 is the detectors' background label)")
        if cat_id < 1:
            highest = max(i for i in ids if type(i) is int)
            what = "the detectors' background label" if cat_id == 0 else 'a negative number'
            raise ValueError(
                f"COCO annotation file {annotations!r}: category {name!r} has id {cat_id}, {what}: category ids "
                f"must be >= 1. Renumber it (e.g. to {highest + 1}, above the highest id) in 'categories' and in "
                f"its annotations' category_id")
    return set(ids)


def _warn_about_boxes(dataset: Dict[str, Any], images: Dict[Any, Dict[str, Any]], annotations: str,
                      evaluation: bool) -> None:
    """One warning counting the boxes with no area inside their image (training leaves them out, COCO AP cannot
    match them) and, for training, those reaching past its edge (clipped to it). Crowd regions are not counted."""
    empty, clipped, first, total = 0, 0, None, len(dataset['annotations'])
    for ann in dataset['annotations']:
        if ann.get('iscrowd', 0):
            continue
        image = images[ann['image_id']]
        width, height = (image.get(k) if _numbers([image.get(k)]) else math.inf for k in ('width', 'height'))
        x, y, w, h = ann['bbox']
        if min(x + w, width) - max(x, 0) < 1 or min(y + h, height) - max(y, 0) < 1:  # SanitizeBoundingBoxes' 1 px
            empty += 1
            first = ann.get('id', '?') if first is None else first
        elif x < 0 or y < 0 or x + w > width or y + h > height:
            clipped += 1
    parts = []
    if empty:
        parts.append(f"{empty} of {total} boxes have no area inside their image (zero width or height, or outside "
                     f"the image; the first is annotation {first}): " + (
                         'COCO AP counts them as objects that no detection can match' if evaluation else
                         'training leaves them out'))
    if clipped and not evaluation:
        one = clipped == 1
        parts.append(f"{clipped} {'reaches' if one else 'reach'} past {'its' if one else 'their'} image's edge: "
                     f"training clips {'it' if one else 'them'} to the image")
    if parts:
        _logger.warning(f"COCO annotation file {annotations!r}: {'; '.join(parts)}")


def _load_coco_api(annotations: str, masks: bool, evaluation: bool) -> Any:
    """pycocotools' ``COCO`` index of an instances file, with errors naming the file and what is wrong."""
    require_pycocotools()
    from pycocotools.coco import COCO

    if not os.path.isfile(annotations):
        raise FileNotFoundError(f'COCO annotation file {annotations!r} not found')
    try:
        with open(annotations, encoding='utf-8-sig') as f:  # JSON is UTF-8; a byte order mark is skipped
            dataset = json.load(f)
    except UnicodeDecodeError as e:
        raise ValueError(f'COCO annotation file {annotations!r} is not UTF-8 text ({type(e).__name__}: {e}): save it '
                         f'as UTF-8 JSON') from e
    except json.JSONDecodeError as e:
        raise ValueError(f'COCO annotation file {annotations!r} is not valid JSON: {e}') from e
    missing = [k for k in _REQUIRED_KEYS if not isinstance(dataset, dict) or not isinstance(dataset.get(k), list)]
    if missing:
        raise ValueError(
            f"COCO annotation file {annotations!r} lacks {', '.join(missing)}: an instances file needs "
            f"'images', 'annotations' and 'categories' lists")
    for img in dataset['images']:
        if not isinstance(img, dict) or 'id' not in img or 'file_name' not in img:
            raise ValueError(f"COCO annotation file {annotations!r}: image {_REPR.repr(img)} needs an id and a "
                             f"file_name")
    images = {img['id']: img for img in dataset['images']}
    category_ids = _check_categories(dataset['categories'], annotations)
    keys = _ANNOTATION_KEYS + (('segmentation',) if masks else ())
    first, n_bad = '', 0
    for ann in dataset['annotations']:
        problem = _annotation_problem(ann, keys, images, category_ids, evaluation)
        if problem:
            n_bad += 1
            first = first or f"annotation {ann.get('id', '?')} {problem}"
    if n_bad:
        more = f' ({n_bad} annotations have problems; this is the first)' if n_bad > 1 else ''
        raise ValueError(f'COCO annotation file {annotations!r}: {first}{more}')
    _warn_about_boxes(dataset, images, annotations, evaluation)
    coco = COCO()  # index the checked dict without parsing the file a second time
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _check_images(coco: Any, images: str, annotations: str) -> None:
    if not os.path.isdir(images):
        raise FileNotFoundError(f'Image folder {images!r} (for {annotations!r}) not found')
    missing = [img['file_name'] for img in coco.dataset['images']
               if not os.path.isfile(os.path.join(images, img['file_name']))]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(coco.dataset['images'])} images listed in {annotations!r} are missing "
            f"from {images!r}, e.g. {', '.join(missing[:3])}: pass the folder the file names are relative to")


def check_num_classes(categories: Sequence[Dict[str, Any]], num_classes: int, source: str) -> None:
    """Category ids are the model's labels (0 is background): each must be below ``num_classes``."""
    max_id = max(c['id'] for c in categories)
    if max_id >= num_classes:
        raise ValueError(
            f'{source} has category ids up to {max_id} but the model has num_classes={num_classes} '
            f'(labels 0..{num_classes - 1}, 0 = background): use num_classes={max_id + 1} or more')


def _drop_crowds_and_empty(dataset: CocoDetection) -> None:
    """Training skips crowd regions and images left without objects, as torchvision's references do."""
    coco = dataset.coco
    coco.dataset['annotations'] = [a for a in coco.dataset['annotations'] if not a.get('iscrowd', 0)]
    coco.createIndex()
    dataset.ids = [i for i in dataset.ids if coco.getAnnIds(imgIds=i)]


def detection_transforms(train: bool) -> v2.Compose:
    """Tensor image in [0, 1]; training clips boxes to the image (as torchvision's references), adds a horizontal
    flip and leaves out the boxes with no area left (``_warn_about_boxes`` counts them when loading)."""
    if train:
        return v2.Compose([
            v2.ToImage(), v2.ClampBoundingBoxes(), v2.RandomHorizontalFlip(0.5), v2.ToDtype(torch.float32, scale=True),
            v2.SanitizeBoundingBoxes()])
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


class _QuietCocoDetection(CocoDetection):
    """``CocoDetection`` over an already checked pycocotools index."""

    def __init__(self, root: str, coco: Any, transforms: Any) -> None:
        super(CocoDetection, self).__init__(root, transforms=transforms)
        self.coco = coco
        self.ids = sorted(coco.imgs.keys())

    def _load_image(self, image_id: int) -> Image.Image:  # 16-bit images scaled, not saturated
        return read_rgb(os.path.join(self.root, self.coco.loadImgs(image_id)[0]['file_name']))


def load_coco_detection(images: str, annotations: str, train: bool, masks: bool) -> Dataset:
    """A COCO-format instances dataset yielding ``(image, target)`` for torchvision's detectors.

    Targets hold ``boxes`` (XYXY), ``labels`` (the category ids), ``image_id`` and, with ``masks`` when ``train``,
    ``masks``. ``masks``: every annotation needs a valid segmentation (Mask R-CNN: its training masks, its mask
    AP). Evaluation data (``train=False``) needs each object's area (read by COCO AP).
    Raises a clear ValueError (FileNotFoundError) naming the file and the problem, before anything is trained:
    a missing/malformed annotation file, a category id below 1, an annotation of the wrong shape or type, or images
    missing from ``images``.
    """
    coco = _load_coco_api(annotations, masks, evaluation=not train)
    _check_images(coco, images, annotations)
    dataset = _QuietCocoDetection(images, coco, transforms=detection_transforms(train))
    if train:
        _drop_crowds_and_empty(dataset)
        if not dataset.ids:
            raise ValueError(f'{annotations!r} has no image with a (non-crowd) object to train on')
    keys = ('image_id', 'boxes', 'labels') + (('masks',) if masks and train else ())  # AP reads the index
    wrapped = wrap_dataset_for_transforms_v2(dataset, target_keys=keys)
    wrapped.coco = coco
    return wrapped


def collate_detection(batch: List[Tuple[Any, Any]]) -> Tuple[Tuple[Any, ...], ...]:
    """Images of different sizes stay a tuple: torchvision's detectors batch them themselves."""
    return tuple(zip(*batch))
