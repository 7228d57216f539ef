"""timm train.py's summary.csv, read the way both the attention study and publishing need it."""
import csv
import os
from typing import Dict

__all__ = ['read_summary']


def read_summary(path: os.PathLike) -> Dict[int, Dict[str, float]]:
    """train.py's summary.csv as {epoch: row}; the last row of an epoch wins (a resumed run repeats the header
    and may redo the epoch it was killed in)."""
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header = rows[0]
    out = {}
    for r in rows[1:]:
        if r == header or len(r) != len(header):
            continue
        row = {k: float(v) for k, v in zip(header, r)}
        out[int(row['epoch'])] = row
    return out
