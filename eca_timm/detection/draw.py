"""Detections drawn on images (torchvision's drawing utilities) and written as PNG, marked as drawn here."""
from typing import Dict, Mapping, Tuple

import torch
from PIL import Image, PngImagePlugin
from torchvision.transforms.v2.functional import to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from .._io import atomic_write

__all__ = ['DRAWN_BY', 'PALETTE', 'label_color', 'draw_detections', 'write_png', 'is_drawing']

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
