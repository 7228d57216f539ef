"""COCO-format detection data: torchvision's ``CocoDetection`` wrapped for transforms v2, checked up front."""
import json
import os
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch.utils.data import Dataset
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

__all__ = ['load_coco_detection', 'check_num_classes', 'collate_detection', 'require_pycocotools']

_REQUIRED_KEYS = ('images', 'annotations', 'categories')
_ANNOTATION_KEYS = ('image_id', 'category_id', 'bbox')


def require_pycocotools() -> None:
    """Fail with the install command when the optional ``pycocotools`` is missing."""
    try:
        import pycocotools  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "COCO detection data and AP need pycocotools: pip install 'eca-timm[detection]'") from e


def _annotation_problem(ann: Dict[str, Any], keys: Sequence[str], image_ids: set, category_ids: set) -> str:
    """What is wrong with one instance annotation ('' when nothing)."""
    lacking = [k for k in keys if k not in ann]
    if 'segmentation' in lacking:
        return 'lacks segmentation (Mask R-CNN trains on masks: add them or use a Faster R-CNN model)'
    if lacking:
        return f"lacks {', '.join(lacking)}"
    if ann['image_id'] not in image_ids:
        return f"refers to image id {ann['image_id']} not in 'images'"
    if ann['category_id'] not in category_ids:
        return f"has category id {ann['category_id']} not in 'categories'"
    if not isinstance(ann['bbox'], list) or len(ann['bbox']) != 4:
        return f"has bbox {ann['bbox']!r}, not [x, y, w, h]"
    return ''


def _load_coco_api(annotations: str, masks: bool) -> Any:
    """pycocotools' ``COCO`` index of an instances file, with errors naming the file and what is wrong."""
    require_pycocotools()
    from pycocotools.coco import COCO

    if not os.path.isfile(annotations):
        raise FileNotFoundError(f'COCO annotation file {annotations!r} not found')
    try:
        with open(annotations) as f:
            dataset = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'COCO annotation file {annotations!r} is not valid JSON: {e}') from e
    missing = [k for k in _REQUIRED_KEYS if not isinstance(dataset, dict) or k not in dataset]
    if missing:
        raise ValueError(
            f"COCO annotation file {annotations!r} lacks {', '.join(missing)}: an instances file needs "
            f"'images', 'annotations' and 'categories' lists")
    image_ids = {img['id'] for img in dataset['images']}
    category_ids = {cat['id'] for cat in dataset['categories']}
    keys = _ANNOTATION_KEYS + (('segmentation',) if masks else ())
    for ann in dataset['annotations']:
        problem = _annotation_problem(ann, keys, image_ids, category_ids)
        if problem:
            raise ValueError(f"COCO annotation file {annotations!r}: annotation {ann.get('id', '?')} {problem}")
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
    """Tensor image in [0, 1]; training adds a horizontal flip and drops degenerate boxes."""
    if train:
        return v2.Compose([
            v2.ToImage(), v2.RandomHorizontalFlip(0.5), v2.ToDtype(torch.float32, scale=True),
            v2.SanitizeBoundingBoxes()])
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


class _QuietCocoDetection(CocoDetection):
    """``CocoDetection`` over an already checked pycocotools index."""

    def __init__(self, root: str, coco: Any, transforms: Any) -> None:
        super(CocoDetection, self).__init__(root, transforms=transforms)
        self.coco = coco
        self.ids = sorted(coco.imgs.keys())


def load_coco_detection(images: str, annotations: str, train: bool, masks: bool) -> Dataset:
    """A COCO-format instances dataset yielding ``(image, target)`` for torchvision's detectors.

    Targets hold ``boxes`` (XYXY), ``labels`` (the category ids), ``image_id`` and, with ``masks``, ``masks``.
    Raises a clear error for a missing/malformed annotation file or images missing from ``images``.
    """
    coco = _load_coco_api(annotations, masks)
    _check_images(coco, images, annotations)
    dataset = _QuietCocoDetection(images, coco, transforms=detection_transforms(train))
    if train:
        _drop_crowds_and_empty(dataset)
        if not dataset.ids:
            raise ValueError(f'{annotations!r} has no image with a (non-crowd) object to train on')
    keys = ('image_id', 'boxes', 'labels') + (('masks',) if masks else ())
    wrapped = wrap_dataset_for_transforms_v2(dataset, target_keys=keys)
    wrapped.coco = coco
    return wrapped


def collate_detection(batch: List[Tuple[Any, Any]]) -> Tuple[Tuple[Any, ...], ...]:
    """Images of different sizes stay a tuple: torchvision's detectors batch them themselves."""
    return tuple(zip(*batch))
