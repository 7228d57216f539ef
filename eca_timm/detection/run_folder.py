"""Run folders of ``detect train``: timm train.py's naming, and an earlier run is never written over.

As train.py, a run writes to ``<--output>/<--experiment>``, and the experiment name defaults to
``<date>-<time>-<model>-<image size>`` (here the shorter side, ``--min-size``); a dated name already taken gets
``-1``, ``-2``... (timm's ``get_outdir(inc=True)``). A folder named with ``--experiment`` that already holds files
is refused. ``--resume`` continues the run in the checkpoint's own folder.
"""
import csv
import os
from dataclasses import dataclass
from datetime import datetime
from typing import List, Optional

__all__ = ['RunFolder', 'plan_run_folder', 'make_run_folder', 'check_resumed_summary']


@dataclass
class RunFolder:
    path: str  # where last.pth, summary.csv and the args YAML files go
    dated: bool  # the default <date>-<time>-<model>-<size> name: another run taking it meanwhile moves this one on
    resumed: bool  # continues the run saved in ``path``: appends to its summary.csv


def _contents(path: str) -> List[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _taken(path: str) -> bool:
    return os.path.exists(path) and (not os.path.isdir(path) or bool(os.listdir(path)))


def _refuse(path: str) -> FileExistsError:
    if not os.path.isdir(path):
        return FileExistsError(f'Run folder {path!r} is a file: choose another --experiment name')
    names = _contents(path)
    listed = ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')
    if 'last.pth' in names:
        return FileExistsError(
            f"Run folder {path!r} already holds an earlier run ({listed}): continue it with --resume "
            f"{os.path.join(path, 'last.pth')}, or start a new run with another --experiment name (or none for a "
            f"new dated folder)")
    return FileExistsError(
        f'Run folder {path!r} is not empty ({listed}): choose another --experiment name (or none for a new dated '
        f'folder), or empty it')


def plan_run_folder(output: str, experiment: Optional[str], model: str, image_size: int,
                    resume: Optional[str]) -> RunFolder:
    """Where this run will write. Raises, before anything is written, where that would write over another run."""
    if resume:
        if not os.path.isfile(resume):
            raise FileNotFoundError(f'Checkpoint {resume!r} not found: --resume takes the last.pth of a run folder')
        folder = os.path.dirname(resume) or '.'
        if experiment and os.path.realpath(os.path.join(output, experiment)) != os.path.realpath(folder):
            raise ValueError(
                f'--resume {resume!r} continues the run in its folder {folder!r}, but --experiment names '
                f'{os.path.join(output, experiment)!r}: leave out --experiment (and --output) to resume')
        return RunFolder(folder, dated=False, resumed=True)
    if experiment:
        path = os.path.join(output, experiment)
        if _taken(path):
            raise _refuse(path)
        return RunFolder(path, dated=False, resumed=False)
    name = '-'.join([datetime.now().strftime('%Y%m%d-%H%M%S'), model, str(image_size)])
    return RunFolder(_free(os.path.join(output, name)), dated=True, resumed=False)


def _free(path: str) -> str:
    """``path``, or the first of ``path-1``, ``path-2``... not taken by another run."""
    candidate, count = path, 0
    while _taken(candidate):
        count += 1
        candidate = f'{path}-{count}'
    return candidate


def make_run_folder(run: RunFolder) -> str:
    """Create the run folder when the run is about to write its first file, and return its path.

    Checked again here: data loading takes a while, and another run may have taken the folder meanwhile.
    """
    path = run.path
    if run.dated:
        path = _free(path)
    elif not run.resumed and _taken(path):
        raise _refuse(path)
    os.makedirs(path, exist_ok=True)
    return path


def check_resumed_summary(run: RunFolder, evaluates: bool) -> None:
    """A resumed run appends rows below the header of its summary.csv: they must have its columns (with or without
    the evaluation ones, which depend on the validation data)."""
    path = os.path.join(run.path, 'summary.csv')
    if not run.resumed or not os.path.isfile(path):
        return
    with open(path, newline='') as f:
        header = next(csv.reader(f), [])
    had_eval = any(name.startswith('eval_') for name in header)
    if header and had_eval and not evaluates:
        raise ValueError(f'{path!r} has evaluation columns, but this resume has no validation data: pass the '
                         f"run's --val-images and --val-ann (or --data-dir) again, so that its rows match")
    if header and evaluates and not had_eval:
        raise ValueError(f'{path!r} has no evaluation columns, but this resume has validation data: leave out '
                         f'--val-images and --val-ann as the run did, so that its rows match')
