"""The Fashion-MNIST subset shipped with eca-timm, written out as a timm folder dataset.

``eca_timm/data/fashion_mnist_subset.npz`` holds 100 training and 20 validation images per class (Zalando
Research, MIT; see ``eca_timm/data/README.md``). timm's train.py / validate.py read folder datasets, so
``write_image_folder`` writes ``train/<class>/*.png`` and ``validation/<class>/*.png``.
"""
import os
from importlib import resources
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from .._io import atomic_dir

__all__ = ['SUBSET_FILE', 'load_subset', 'write_image_folder']

SUBSET_FILE = 'fashion_mnist_subset.npz'
SPLITS = {'train': ('x_train', 'y_train'), 'validation': ('x_val', 'y_val')}


def load_subset() -> Dict[str, np.ndarray]:
    """The shipped arrays: ``x_train, y_train, x_val, y_val`` (uint8, images 28x28) and ``classes``."""
    with resources.files('eca_timm.data').joinpath(SUBSET_FILE).open('rb') as f:
        with np.load(f) as data:
            return {k: data[k] for k in data.files}


def _first_per_class(labels: np.ndarray, n: Optional[int]) -> np.ndarray:
    if n is None:
        return np.arange(len(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in np.unique(labels)]))


def write_image_folder(
        out_dir: os.PathLike,
        train_per_class: Optional[int] = None,
        val_per_class: Optional[int] = None,
) -> Tuple[Path, Dict[str, int]]:
    """Write the subset as ``out_dir/{train,validation}/<class>/<index>.png``; return ``out_dir`` and counts.

    ``*_per_class`` keep only the first N images of each class (tiny datasets for tests). The tree is built in a
    temporary folder next to ``out_dir`` and moved into place, so ``out_dir`` is never half written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f'{out_dir} exists already: pass a new folder for the dataset')
    data = load_subset()
    classes = [str(c) for c in data['classes']]
    per_class = {'train': train_per_class, 'validation': val_per_class}
    counts = {}
    with atomic_dir(out_dir) as tmp:
        for split, (xk, yk) in SPLITS.items():
            keep = _first_per_class(data[yk], per_class[split])
            for c in classes:
                (tmp / split / c).mkdir(parents=True)
            for i in keep:
                Image.fromarray(data[xk][i]).save(tmp / split / classes[data[yk][i]] / f'{i:05d}.png')
            counts[split] = len(keep)
    return out_dir, counts
