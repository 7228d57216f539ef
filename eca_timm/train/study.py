"""The attention study: every recipe of a folder x N seeds through timm's train.py, then mean +- std curves.

``eca-timm study CONFIG_DIR --seeds N --out DIR [--parallel K] [train.py args]`` runs each ``CONFIG_DIR/*.yaml``
(one variant per recipe, named after the file) with seeds 0..N-1 through the runner, one process per run,
K at a time, into ``DIR/<variant>/seed<k>/`` (train.py's own output: summary.csv, checkpoints, plus
train.log). A restarted study skips runs whose summary.csv has all scheduled epochs and resumes unfinished
ones from their last.pth.tar. ``eca-timm plot DIR`` reads the summary.csv files and writes ``top1.png`` and
``loss.png`` (mean +- sample std over seeds per epoch) and ``results.md`` (final and best top-1 per variant).
matplotlib is only needed for ``plot`` (``pip install 'eca-timm[plot]'``).
"""
import argparse
import csv
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .._io import atomic_write
from .._summary import read_summary
from .run import check_train_args, recipe_file, resolve_script

__all__ = ['StudyRun', 'VariantCurves', 'plan_study', 'run_study', 'read_summary', 'scheduled_epochs',
           'aggregate', 'results_table', 'plot_curves', 'write_plots']

CURVE_COLUMNS = ('eval_top1', 'eval_loss', 'train_loss')


@dataclass
class StudyRun:
    """One recipe x seed: its train.py arguments, output folder and number of scheduled epochs."""
    variant: str
    seed: int
    recipe: Path
    run_dir: Path
    argv: List[str]
    epochs: int = 0


@dataclass
class VariantCurves:
    """Per-epoch mean and sample std over a variant's runs, and each run's final and best eval top-1."""
    variant: str
    runs: List[Path]
    epochs: np.ndarray
    mean: Dict[str, np.ndarray] = field(default_factory=dict)
    std: Dict[str, np.ndarray] = field(default_factory=dict)
    final_top1: Optional[np.ndarray] = None
    best_top1: Optional[np.ndarray] = None


def scheduled_epochs(args: argparse.Namespace) -> int:
    """Epochs train.py will run for ``args``: timm's scheduler factory decides (warmup prefix, cooldown, cycles)."""
    import torch
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.lr or 0.1)
    _, num_epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=1)
    return num_epochs


def plan_study(
        config_dir: os.PathLike,
        seeds: int,
        out: os.PathLike,
        train_args: Sequence[str] = (),
        scripts_dir: Optional[os.PathLike] = None,
) -> List[StudyRun]:
    """All runs of the study, every recipe checked against train.py first (bad input fails before training)."""
    config_dir, out = Path(config_dir), Path(out)
    recipes = sorted(config_dir.glob('*.yaml'))
    if not recipes:
        raise FileNotFoundError(f'no *.yaml recipes in {config_dir}: pass a folder such as train_configs/cifar10')
    if seeds < 1:
        raise ValueError(f'--seeds must be at least 1, got {seeds}')
    train_py = resolve_script('train.py', scripts_dir)
    runs = []
    for recipe in recipes:
        for seed in range(seeds):
            run_dir = out / recipe.stem / f'seed{seed}'
            argv = ['--config', str(recipe), *train_args, '--seed', str(seed),
                    '--output', str(run_dir.parent), '--experiment', run_dir.name]
            args = check_train_args(train_py, argv)
            runs.append(StudyRun(recipe.stem, seed, recipe, run_dir, argv, scheduled_epochs(args)))
    return runs


def _is_complete(run: StudyRun) -> bool:
    summary = run.run_dir / 'summary.csv'
    return summary.is_file() and set(range(run.epochs)) <= set(read_summary(summary))


def _launch(run: StudyRun, scripts_dir: Optional[os.PathLike], env: Dict[str, str]) -> int:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    argv = list(run.argv)
    last = run.run_dir / 'last.pth.tar'
    if last.is_file():
        argv += ['--resume', str(last)]
    else:
        (run.run_dir / 'summary.csv').unlink(missing_ok=True)  # rows of a run that never checkpointed
    cmd = [sys.executable, '-m', 'eca_timm.run']
    if scripts_dir:
        cmd += ['--scripts-dir', str(scripts_dir)]
    with open(run.run_dir / 'train.log', 'a') as log:
        return subprocess.run(cmd + ['train.py', *argv], stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def run_study(runs: Sequence[StudyRun], parallel: int = 1, scripts_dir: Optional[os.PathLike] = None) -> int:
    """Run the unfinished ``runs``, ``parallel`` at a time; print progress; return how many failed."""
    todo = [r for r in runs if not _is_complete(r)]
    print(f'study: {len(runs)} runs, {len(runs) - len(todo)} complete already, {len(todo)} to run, '
          f'{parallel} at a time', flush=True)
    env = dict(os.environ)
    if 'OMP_NUM_THREADS' not in env and parallel > 1:  # share the cores instead of oversubscribing them
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // parallel))
    failed = []

    def work(i_run):
        i, run = i_run
        print(f'[{i}/{len(todo)}] {run.variant} seed {run.seed}: started ({run.run_dir}/train.log)', flush=True)
        rc = _launch(run, scripts_dir, env)
        if rc != 0 or not _is_complete(run):
            failed.append(run)
            print(f'[{i}/{len(todo)}] {run.variant} seed {run.seed}: FAILED (exit {rc}), see {run.run_dir}/train.log',
                  flush=True)
        else:
            top1 = read_summary(run.run_dir / 'summary.csv')[run.epochs - 1]['eval_top1']
            print(f'[{i}/{len(todo)}] {run.variant} seed {run.seed}: done, final top-1 {top1:.2f}', flush=True)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(work, enumerate(todo, 1)))
    return len(failed)


def aggregate(study_dir: os.PathLike) -> List[VariantCurves]:
    """Mean and sample std (ddof=1; 0 for a single run) per epoch over each variant's runs.

    Variants are the sub-folders of ``study_dir`` with ``*/summary.csv`` runs; only epochs every run of the
    variant has are used, and "final" is the last of those.
    """
    study_dir = Path(study_dir)
    out = []
    for vdir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
        loaded = [(p.parent, read_summary(p)) for p in sorted(vdir.glob('*/summary.csv'))]
        loaded = [(r, s) for r, s in loaded if s]
        if not loaded:
            continue
        runs, summaries = [r for r, _ in loaded], [s for _, s in loaded]
        epochs = np.array(sorted(set.intersection(*(set(s) for s in summaries))))
        if not len(epochs):
            continue
        curves = VariantCurves(vdir.name, runs, epochs)
        ddof = 1 if len(summaries) > 1 else 0
        for col in CURVE_COLUMNS:
            values = np.array([[s[e][col] for e in epochs] for s in summaries])
            curves.mean[col], curves.std[col] = values.mean(axis=0), values.std(axis=0, ddof=ddof)
        top1 = np.array([[s[e]['eval_top1'] for e in epochs] for s in summaries])
        curves.final_top1, curves.best_top1 = top1[:, -1], top1.max(axis=1)
        out.append(curves)
    if not out:
        raise FileNotFoundError(f'no runs in {study_dir}: expected {study_dir}/<variant>/<run>/summary.csv '
                                f'(the layout eca-timm study writes)')
    return out


def _pm(values: np.ndarray) -> str:
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f'{values.mean():.2f} ± {std:.2f}'


def results_table(curves: Sequence[VariantCurves]) -> str:
    """Markdown table: per variant, runs, epochs, final and best eval top-1 as mean ± sample std over runs."""
    lines = ['| variant | runs | epochs | final top-1 (%) | best top-1 (%) |', '|---|---:|---:|---:|---:|']
    for c in curves:
        lines.append(f'| {c.variant} | {len(c.runs)} | {len(c.epochs)} | {_pm(c.final_top1)} | {_pm(c.best_top1)} |')
    return '\n'.join(lines)


def _pyplot() -> Any:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("eca-timm plot needs matplotlib: pip install 'eca-timm[plot]'") from e
    return plt


def plot_curves(curves: Sequence[VariantCurves], columns: Sequence[str], title: str) -> Any:
    """A matplotlib Figure with one panel per column: each variant's mean line and a mean ± std band."""
    plt = _pyplot()
    labels = {'eval_top1': 'eval top-1 (%)', 'eval_loss': 'eval loss', 'train_loss': 'train loss'}
    fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 4.5), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for c in curves:
            x = c.epochs + 1  # epochs counted from 1 on the axis
            line, = ax.plot(x, c.mean[col], label=f'{c.variant} (n={len(c.runs)})')
            ax.fill_between(x, c.mean[col] - c.std[col], c.mean[col] + c.std[col], color=line.get_color(),
                            alpha=0.2, linewidth=0)
        ax.set_xlabel('epoch')
        ax.set_ylabel(labels.get(col, col))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_plots(study_dir: os.PathLike) -> Dict[str, Path]:
    """Write top1.png, loss.png and results.md into ``study_dir``; return their paths."""
    plt = _pyplot()
    study_dir = Path(study_dir)
    curves = aggregate(study_dir)
    paths = {'top1': study_dir / 'top1.png', 'loss': study_dir / 'loss.png', 'table': study_dir / 'results.md'}
    name = study_dir.name
    for key, cols, title in (('top1', ['eval_top1'], f'{name}: eval top-1, mean ± std over seeds'),
                             ('loss', ['train_loss', 'eval_loss'], f'{name}: loss, mean ± std over seeds')):
        fig = plot_curves(curves, cols, title)
        with atomic_write(paths[key]) as f:
            fig.savefig(f, dpi=120, format='png')
        plt.close(fig)
    table = results_table(curves) + '\n'
    with atomic_write(paths['table']) as f:
        f.write(table.encode())
    return paths


def _study(args: argparse.Namespace) -> int:
    with recipe_file(args.config_dir) as config_dir:  # a folder of this checkout, else eca-timm's packaged copy
        try:
            runs = plan_study(config_dir, args.seeds, args.out, args.extra, args.scripts_dir)
        except (FileNotFoundError, ValueError) as e:
            print(f'eca-timm study: error: {e}', file=sys.stderr)
            return 2
        failed = run_study(runs, args.parallel, args.scripts_dir)
    print(f'study: {len(runs) - failed}/{len(runs)} runs complete in {args.out}; '
          f'next: eca-timm plot {args.out}', flush=True)
    return 1 if failed else 0


def _plot(args: argparse.Namespace) -> int:
    try:
        paths = write_plots(args.study_dir)
    except (FileNotFoundError, ImportError) as e:
        print(f'eca-timm plot: error: {e}', file=sys.stderr)
        return 2
    print(paths['table'].read_text(), end='')
    print(f'wrote {paths["top1"]}, {paths["loss"]}, {paths["table"]}')
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'study', allow_abbrev=False, help='run every recipe of a folder x N seeds through train.py',
        description='Run CONFIG_DIR/*.yaml x seeds through timm\'s train.py. Arguments not listed here go to '
                    'train.py (e.g. --epochs 10 --amp).')
    p.add_argument('config_dir', help='folder of train.py recipes, one per variant (e.g. train_configs/cifar10)')
    p.add_argument('--seeds', type=int, default=5, help='seeds 0..N-1 per recipe (default: 5)')
    p.add_argument('--out', required=True, help='study folder: OUT/<recipe>/seed<k>/')
    p.add_argument('--parallel', type=int, default=1, help='runs at a time (default: 1)')
    p.add_argument('--scripts-dir', default=None, help='folder with timm\'s train.py (default: $TIMM_SCRIPTS, cache)')
    p.set_defaults(func=_study, accepts_extra_args=True)

    p = subparsers.add_parser('plot', help='mean ± std curves (PNG) and a top-1 table of an eca-timm study')
    p.add_argument('study_dir', help='the --out folder of eca-timm study')
    p.set_defaults(func=_plot)
