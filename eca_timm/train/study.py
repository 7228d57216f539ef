"""The attention study: every recipe of a folder x N seeds through timm's train.py, then its report.

``eca-timm study CONFIG_DIR --seeds N --out DIR [--parallel K] [train.py args]`` runs each ``CONFIG_DIR/*.yaml``
(one variant per recipe, named after the file) with seeds 0..N-1 through the runner, one process per run,
K at a time, into ``DIR/<variant>/seed<k>/`` (train.py's own output: summary.csv, args.yaml, checkpoints, plus
train.log), and prints each run's progress: a line per finished epoch (top-1 and best so far) from its
summary.csv. A restarted study skips runs whose summary.csv has all scheduled epochs and resumes unfinished
ones from their last.pth.tar. ``eca-timm plot DIR`` writes the report (``plot.write_plots``): curves, final
top-1 per seed, each variant against the no-attention baseline (difference, 95% CI, exact permutation test)
beside its cost, and results.md. matplotlib is only needed for ``plot`` (``pip install 'eca-timm[plot]'``).
"""
import argparse
import contextlib
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from .._summary import read_summary
from .._timing import CLOCKS
from .plot import plot_curves, write_plots
from .report import VariantCurves, aggregate, results_table
from .run import check_train_args, recipe_file, resolve_script

__all__ = ['StudyRun', 'VariantCurves', 'plan_study', 'run_study', 'read_summary', 'scheduled_epochs',
           'aggregate', 'results_table', 'plot_curves', 'write_plots']

POLL_S = 2.0  # seconds between reads of a running run's summary.csv


@dataclass
class StudyRun:
    """One recipe x seed: its train.py arguments, output folder and number of scheduled epochs."""
    variant: str
    seed: int
    recipe: Path
    run_dir: Path
    argv: List[str]
    epochs: int = 0


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


def _prepare(run: StudyRun) -> List[str]:
    """train.py's arguments for this launch: resume from last.pth.tar, or start afresh without old rows."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    argv = list(run.argv)
    last = run.run_dir / 'last.pth.tar'
    if last.is_file():
        argv += ['--resume', str(last)]
    else:
        (run.run_dir / 'summary.csv').unlink(missing_ok=True)  # rows of a run that never checkpointed
    return argv


def _launch(run: StudyRun, argv: List[str], scripts_dir: Optional[os.PathLike], env: Dict[str, str]) -> int:
    cmd = [sys.executable, '-m', 'eca_timm.run']
    if scripts_dir:
        cmd += ['--scripts-dir', str(scripts_dir)]
    with open(run.run_dir / 'train.log', 'a') as log:
        return subprocess.run(cmd + ['train.py', *argv], stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def _say(line: str) -> None:
    """Print one progress line now (runs report from several threads; a line is one print)."""
    print(line, flush=True)


class _Progress:
    """Turns the epochs that appear in a run's summary.csv into lines: ``epoch k/N, top-1 x (best y)``.

    train.py appends one row per epoch after its evaluation, so polling the file needs no log parsing. Epochs
    already in the file when the run is (re)launched are not reported again, but count for "best".
    """

    def __init__(self, run: StudyRun, prefix: str):
        self.run, self.prefix = run, prefix
        self.reported = set(self._rows())

    def _rows(self) -> Dict[int, Dict[str, float]]:
        try:
            return read_summary(self.run.run_dir / 'summary.csv')
        except (OSError, ValueError, KeyError):  # not written yet, or read mid-write: the next poll sees it
            return {}

    def poll(self) -> None:
        rows = self._rows()
        for epoch in sorted(e for e in rows if e not in self.reported and 'eval_top1' in rows[e]):
            best = max(rows[e]['eval_top1'] for e in rows if e <= epoch and 'eval_top1' in rows[e])
            _say(f'{self.prefix}: epoch {epoch + 1}/{self.run.epochs}, top-1 {rows[epoch]["eval_top1"]:.1f} '
                 f'(best {best:.1f})')
            self.reported.add(epoch)


@contextlib.contextmanager
def _every(seconds: float, fn: Callable[[], None]) -> Iterator[None]:
    """Call ``fn`` every ``seconds`` in a thread while the block runs."""
    stop = threading.Event()

    def loop():
        while not stop.wait(seconds):
            fn()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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
    _say(f'study: {len(runs)} runs, {len(runs) - len(todo)} complete already, {len(todo)} to run, '
         f'{parallel} at a time')
    env = dict(os.environ)
    if 'OMP_NUM_THREADS' not in env and parallel > 1:  # share the cores instead of oversubscribing them
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // parallel))
    failed = []

    def work(i_run):
        i, run = i_run
        prefix = f'[{i}/{len(todo)}] {run.variant}/seed{run.seed}'
        argv = _prepare(run)
        _say(f'{prefix}: started ({run.run_dir}/train.log)')
        progress = _Progress(run, prefix)
        with _every(poll_s, progress.poll):
            rc = _launch(run, argv, scripts_dir, env)
        progress.poll()  # the epochs written since the last poll
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
    if args.measure_cost and args.cost_json:
        print('eca-timm plot: error: --measure-cost and --cost-json exclude each other', file=sys.stderr)
        return 2
    options = dict(device=args.cost_device, batch_size=args.cost_batch_size, rounds=args.cost_rounds,
                   clock=args.cost_clock)
    try:
        paths = write_plots(args.study_dir, baseline=args.baseline, measure_cost=args.measure_cost,
                            cost_json=args.cost_json, cost_options=options)
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f'eca-timm plot: error: {e}', file=sys.stderr)
        return 2
    print(paths['table'].read_text(), end='')
    print(f'wrote {", ".join(str(p) for p in paths.values())}')
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

    p = subparsers.add_parser(
        'plot', help='report of an eca-timm study: curves, per-seed top-1, each variant vs the baseline and its cost',
        description='Write STUDY_DIR/results.md and top1.png, loss.png, per_seed.png, cost.png: every variant\'s '
                    'final top-1 against the no-attention baseline (difference of means, Welch 95% CI, exact '
                    'permutation test over seeds) beside its parameters, GMACs and, when measured, throughput.',
        epilog='examples:\n  eca-timm plot runs/cifar10\n  eca-timm plot runs/cifar10 --measure-cost --cost-clock cpu'
               '\n  eca-timm plot runs/cifar10 --cost-json runs/cifar10/cost.json')
    p.add_argument('study_dir', help='the --out folder of eca-timm study')
    p.add_argument('--baseline', default=None,
                   help='the no-attention variant to compare with (default: the variant named none or none_*)')
    p.add_argument('--measure-cost', action='store_true',
                   help='time each variant\'s training step and inference on this machine (writes STUDY_DIR/cost.json)')
    p.add_argument('--cost-json', default=None,
                   help='throughput from an earlier --measure-cost (its cost.json) or an eca-timm bench --output')
    p.add_argument('--cost-device', default='cpu', help="device for --measure-cost: 'cpu' or 'cuda[:N]'")
    p.add_argument('--cost-batch-size', type=int, default=None,
                   help='batch for --measure-cost (default: the study\'s training batch size)')
    p.add_argument('--cost-rounds', type=int, default=5, help='interleaved timing rounds (default: 5)')
    p.add_argument('--cost-clock', default='wall', choices=CLOCKS,
                   help="'cpu' times process CPU time (steadier on a shared CPU machine)")
    p.set_defaults(func=_plot)
