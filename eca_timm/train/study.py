"""The attention study: every recipe of a folder x N seeds through timm's train.py.

``eca-timm study CONFIG_DIR --seeds N --out DIR [--parallel K] [train.py args]`` runs each ``CONFIG_DIR/*.yaml``
(one variant per recipe, named after the file) with seeds 0..N-1 through the runner, one process per run,
K at a time, into ``DIR/<variant>/seed<k>/`` (train.py's own output: summary.csv, args.yaml, checkpoints, plus
train.log), and prints each run's progress: a line per finished epoch (top-1 and best so far) from its
summary.csv. A restarted study skips runs whose summary.csv has all scheduled epochs and resumes unfinished
ones from their last.pth.tar. Its trainers die with it, and each run folder has one trainer at a time (the
runner's lock), so a study killed and restarted never trains a run twice at once. ``eca-timm plot DIR`` writes
the report (``plot``).
"""
import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .._io import read_summary
from .preflight import RUN_FILES, check_runnable, check_train_args, scheduled_epochs
from .run import POLL_S, EpochProgress, recipe_file, resolve_script, run_child, run_folder_lock

__all__ = ['StudyRun', 'plan_study', 'run_study']


@dataclass
class StudyRun:
    """One recipe x seed: its train.py arguments, output folder and number of scheduled epochs."""
    variant: str
    seed: int
    recipe: Path
    run_dir: Path
    argv: List[str]
    epochs: int = 0


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
            check_runnable('train.py', args)
            runs.append(StudyRun(recipe.stem, seed, recipe, run_dir, argv, scheduled_epochs(args)))
    return runs


def _is_complete(run: StudyRun) -> bool:
    summary = run.run_dir / 'summary.csv'
    if not summary.is_file():
        return False
    try:
        return set(range(run.epochs)) <= set(read_summary(summary))
    except ValueError:
        if (run.run_dir / 'last.pth.tar').is_file():
            raise  # a resume would append to it: the user must look at it
        return False  # rows of an attempt that never checkpointed: _prepare starts the run afresh


def _prepare(run: StudyRun) -> List[str]:
    """train.py's arguments for this launch: resume from last.pth.tar, or start afresh without the files of an
    earlier attempt that never checkpointed (this study wrote them). Call it holding the run folder's lock."""
    argv = list(run.argv)
    last = run.run_dir / 'last.pth.tar'
    if last.is_file():
        argv += ['--resume', str(last)]
    else:
        for path in [*(run.run_dir / name for name in RUN_FILES), *run.run_dir.glob('checkpoint-*.pth.tar')]:
            path.unlink(missing_ok=True)
    return argv


def _launch(run: StudyRun, argv: List[str], scripts_dir: Optional[os.PathLike], env: Dict[str, str],
            progress: EpochProgress, poll_s: float) -> int:
    cmd = [sys.executable, '-m', 'eca_timm.run']
    if scripts_dir:
        cmd += ['--scripts-dir', str(scripts_dir)]
    return run_child(cmd + ['train.py', *argv], run.run_dir / 'train.log', progress.poll, poll_s, env)


def _say(line: str) -> None:
    """Print one progress line now (runs report from several threads; a line is one print)."""
    print(line, flush=True)


def run_study(
        runs: Sequence[StudyRun],
        parallel: int = 1,
        scripts_dir: Optional[os.PathLike] = None,
        poll_s: float = POLL_S,
) -> int:
    """Run the unfinished ``runs``, ``parallel`` at a time; return how many failed.

    Prints a line when a run starts, one per finished epoch (its summary.csv is polled every ``poll_s`` seconds)
    and one when it ends.
    """
    todo = [r for r in runs if not _is_complete(r)]
    for run in todo:  # before any run starts: none may still be written by another trainer (a killed study's?)
        if run.run_dir.is_dir():
            with run_folder_lock(run.run_dir):
                pass
    _say(f'study: {len(runs)} runs, {len(runs) - len(todo)} complete already, {len(todo)} to run, '
         f'{parallel} at a time')
    env = dict(os.environ)
    if 'OMP_NUM_THREADS' not in env and parallel > 1:  # share the cores instead of oversubscribing them
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // parallel))
    failed = []

    def work(i_run):
        i, run = i_run
        prefix = f'[{i}/{len(todo)}] {run.variant}/seed{run.seed}'
        with run_folder_lock(run.run_dir):  # not while another trainer (of a killed study, say) writes it
            argv = _prepare(run)
        _say(f'{prefix}: started ({run.run_dir}/train.log)')
        progress = EpochProgress(run.run_dir / 'summary.csv', run.epochs, prefix, _say)
        rc = _launch(run, argv, scripts_dir, env, progress, poll_s)
        if rc != 0 or not _is_complete(run):
            failed.append(run)
            _say(f'{prefix}: FAILED (exit {rc}), see {run.run_dir}/train.log')
        else:
            top1 = read_summary(run.run_dir / 'summary.csv')[run.epochs - 1]['eval_top1']
            _say(f'{prefix}: done, final top-1 {top1:.2f}')

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(work, enumerate(todo, 1)))
    return len(failed)


def _study(args: argparse.Namespace) -> int:
    with recipe_file(args.config_dir) as config_dir:  # a folder of this checkout, else eca-timm's packaged copy
        runs = plan_study(config_dir, args.seeds, args.out, args.extra, args.scripts_dir)
        failed = run_study(runs, args.parallel, args.scripts_dir)
    print(f'study: {len(runs) - failed}/{len(runs)} runs complete in {args.out}; '
          f'next: eca-timm plot {args.out}', flush=True)
    return 1 if failed else 0


EXAMPLES = '''examples:
  eca-timm study train_configs/fashion_mnist_study --seeds 3 --out runs/fmnist --parallel 2
  eca-timm study train_configs/cifar10 --seeds 5 --out runs/cifar10 --epochs 50 --amp
  eca-timm plot runs/cifar10
'''


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'study', allow_abbrev=False, help='run every recipe of a folder x N seeds through train.py',
        description='Run CONFIG_DIR/*.yaml x seeds through timm\'s train.py into OUT/<recipe>/seed<k>/, printing '
                    'each run\'s epochs as they finish. Arguments not listed here go to train.py (e.g. --epochs 10 '
                    '--amp). Rerun the same command to continue an interrupted study: finished runs are skipped, '
                    'unfinished ones resume from their last checkpoint.',
        epilog=EXAMPLES)
    p.add_argument('config_dir', help='folder of train.py recipes, one per variant (e.g. train_configs/cifar10)')
    p.add_argument('--seeds', type=int, default=5, help='seeds 0..N-1 per recipe (default: 5)')
    p.add_argument('--out', required=True, help='study folder: OUT/<recipe>/seed<k>/')
    p.add_argument('--parallel', type=int, default=1, help='runs at a time (default: 1)')
    p.add_argument('--scripts-dir', default=None, help='folder with timm\'s train.py (default: $TIMM_SCRIPTS, cache)')
    p.set_defaults(func=_study, accepts_extra_args=True,
                   interrupted_note='rerun the same command to continue: finished runs are kept')
