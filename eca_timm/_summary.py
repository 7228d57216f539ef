"""timm train.py's summary.csv, read the way both the attention study and publishing need it."""
import csv
import os
from typing import Dict

from ._io import read_text

__all__ = ['read_summary']


def read_summary(path: os.PathLike) -> Dict[int, Dict[str, float]]:
    """train.py's summary.csv as {epoch: row}; the last row of an epoch wins (a resumed run repeats the header
    and may redo the epoch it was killed in; a row cut short by a kill is skipped).

    A file that is not one (not UTF-8 text, empty, no ``epoch`` column, only a header, a value that is not a
    number) is a ``ValueError`` naming the file and why.
    """
    def refuse(why: str) -> ValueError:
        return ValueError(f'{path} is not a train.py summary.csv ({why}): fix or remove it')

    rows = list(csv.reader(read_text(path).splitlines()))
    if not rows:
        raise refuse('the file is empty')
    header = rows[0]
    if 'epoch' not in header:
        raise refuse(f'its first line {",".join(header)[:60]!r} has no epoch column')
    out = {}
    for line, r in enumerate(rows[1:], 2):
        if r == header or len(r) != len(header):
            continue
        try:
            row = {k: float(v) for k, v in zip(header, r)}
        except ValueError:
            bad = next((k, v) for k, v in zip(header, r) if not _is_number(v))
            raise refuse(f'line {line}: {bad[0]} is {bad[1]!r}, not a number') from None
        out[int(row['epoch'])] = row
    if not out:
        raise refuse('it has a header but no epoch rows')
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
