#!/usr/bin/env python3
"""Make eca_timm/data/fashion_mnist_subset.npz, the small real dataset of the quickstart and the tests.

Reads Debian's dataset-fashion-mnist (``apt install dataset-fashion-mnist``: the original idx files of
Zalando Research's Fashion-MNIST, MIT) and keeps the first ``--train-per-class`` images of each class of the
training file and the first ``--val-per-class`` of each class of the test file (so validation images are
held out from the original training set too). Deterministic: same files, same subset.
"""
import argparse
import gzip
import os
from pathlib import Path

import numpy as np

CLASSES = ('t-shirt_top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot')


def read_idx(path: Path, offset: int) -> np.ndarray:
    """An idx file's payload (uint8); ``offset`` 16 for images (then 28x28), 8 for labels."""
    with gzip.open(path, 'rb') as f:
        data = np.frombuffer(f.read(), dtype=np.uint8, offset=offset)
    return data.reshape(-1, 28, 28) if offset == 16 else data


def first_per_class(images: np.ndarray, labels: np.ndarray, n: int):
    idx = np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(len(CLASSES))])
    idx.sort()
    return images[idx], labels[idx]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--src', type=Path, default=Path('/usr/share/datasets/fashion-mnist'))
    p.add_argument('--out', type=Path, default=Path(__file__).resolve().parents[1] / 'eca_timm' / 'data'
                   / 'fashion_mnist_subset.npz')
    p.add_argument('--train-per-class', type=int, default=100)
    p.add_argument('--val-per-class', type=int, default=20)
    a = p.parse_args()
    x_train, y_train = first_per_class(read_idx(a.src / 'train-images-idx3-ubyte.gz', 16),
                                       read_idx(a.src / 'train-labels-idx1-ubyte.gz', 8), a.train_per_class)
    x_val, y_val = first_per_class(read_idx(a.src / 't10k-images-idx3-ubyte.gz', 16),
                                   read_idx(a.src / 't10k-labels-idx1-ubyte.gz', 8), a.val_per_class)
    tmp = a.out.with_suffix('.tmp.npz')
    np.savez_compressed(tmp, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, classes=np.array(CLASSES))
    os.replace(tmp, a.out)
    print(f'{a.out}: {len(x_train)} train + {len(x_val)} validation images, {a.out.stat().st_size / 1024:.0f} KiB')


if __name__ == '__main__':
    main()
