"""Run timm's own scripts (train.py, validate.py, benchmark.py, inference.py) with the ECA models registered.

``eca-timm run SCRIPT ARGS...`` (or ``python -m eca_timm.run SCRIPT ARGS...``, also under ``torchrun``) runs SCRIPT
as ``__main__`` with ``ARGS`` as its ``sys.argv``, exactly like ``python SCRIPT ARGS...``, once ``eca_timm`` is
imported. SCRIPT is a path or a bare name (``train.py``) looked up in ``--scripts-dir``, ``$TIMM_SCRIPTS``, then
``~/.cache/eca-timm/timm-scripts`` (``eca-timm scripts`` fills it). Before the script starts, its arguments are
checked (``preflight``). A train.py run with ``--experiment`` holds a lock on its run folder while it trains: one
trainer per folder, released by the OS when the process ends, however it ends.

CPU multi-process training: train.py wraps the model with ``DistributedDataParallel(device_ids=[device])``,
which PyTorch rejects for CPU modules. When running distributed (``WORLD_SIZE`` > 1), the runner swaps
``torch.nn.parallel.DistributedDataParallel`` for a subclass that drops ``device_ids`` / ``output_device`` for a
module on the CPU, and restores the original when the script ends. GPU runs are untouched.

Children that eca-timm commands start (the study's and the quickstart's trainers) die with their parent on Linux
(``child_env`` / ``die_with_parent``: ``PR_SET_PDEATHSIG``), so a killed study leaves no trainer behind.
"""
import argparse
import contextlib
import ctypes
import os
import runpy
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import timm
import torch

from .._io import read_summary
from .._resources import RECIPES, data_file, data_path
from .preflight import check_run_folder, check_runnable, check_train_args, parse_script_args, run_folder, script_argv

__all__ = [
    'SCRIPT_NAMES', 'SCRIPT_FILES', 'SCRIPTS_HINT', 'TIMM_REPO_URL', 'CpuDistributedDataParallel', 'EpochProgress',
    'child_env', 'cpu_ddp_without_device_ids', 'default_scripts_cache', 'die_with_parent', 'find_scripts_dir',
    'offline_hint', 'recipe_file', 'resolve_script', 'run_child', 'run_folder_lock', 'run_script',
]

SCRIPT_NAMES = ('train.py', 'validate.py', 'benchmark.py', 'inference.py')
SCRIPT_FILES = SCRIPT_NAMES + ('distributed_train.sh',)  # what `eca-timm scripts` copies from timm's repository
TIMM_REPO_URL = 'https://github.com/huggingface/pytorch-image-models'
# Modules timm's scripts import that eca-timm's own dependencies lack, and the extra that installs them.
SCRIPT_EXTRAS = {'pandas': 'scripts'}
LOCK_FILE = '.eca-timm.lock'  # in a train.py run folder: the pid of the trainer writing it
PARENT_ENV = 'ECA_TIMM_PARENT_PID'
POLL_S = 2.0  # seconds between reads of a running run's summary.csv


def offline_hint(version: str = timm.__version__, repo_url: str = TIMM_REPO_URL) -> str:
    """How to provide timm's scripts by hand (they are not in the timm wheel)."""
    return (f'copy {", ".join(SCRIPT_FILES)} of timm v{version} ({repo_url}/tree/v{version}) into a folder and set '
            f'TIMM_SCRIPTS to it (or pass --scripts-dir)')


SCRIPTS_HINT = (f'timm\'s scripts are not part of the timm wheel: get them with `eca-timm scripts` (clones the '
                f'release matching your timm into ~/.cache/eca-timm/timm-scripts; it trains nothing), or offline '
                f'{offline_hint()}')


def default_scripts_cache() -> Path:
    """``$XDG_CACHE_HOME/eca-timm/timm-scripts`` (``~/.cache/...`` by default)."""
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'eca-timm' / 'timm-scripts'


def find_scripts_dir(
        scripts_dir: Optional[os.PathLike] = None,
        names: Sequence[str] = SCRIPT_NAMES,
) -> Optional[Path]:
    """The first of ``scripts_dir``, ``$TIMM_SCRIPTS``, the cache folder that holds all ``names``, else None."""
    env = os.environ.get('TIMM_SCRIPTS')
    candidates = [Path(p) for p in (scripts_dir, env) if p] + [default_scripts_cache()]
    for d in candidates:
        if all((d / n).is_file() for n in names):
            return d
    return None


def resolve_script(script: os.PathLike, scripts_dir: Optional[os.PathLike] = None) -> Path:
    """A script path as given if it exists, else a bare name looked up like ``find_scripts_dir``."""
    path = Path(script)
    if path.is_file():
        return path.resolve()
    if path.name == str(script):
        found = find_scripts_dir(scripts_dir, names=(path.name,))
        if found is not None:
            return (found / path.name).resolve()
    searched = [str(p) for p in (scripts_dir, os.environ.get('TIMM_SCRIPTS'), default_scripts_cache()) if p]
    raise FileNotFoundError(
        f'timm script {str(script)!r} not found (looked in: {", ".join(searched)}). {SCRIPTS_HINT}.')


@contextlib.contextmanager
def recipe_file(config: os.PathLike) -> Iterator[Path]:
    """``config`` when it exists here, else the recipe (file or folder) of that name shipped with eca-timm, as a
    real path.

    A packaged recipe is named by its path in ``train_configs/``, with or without that prefix
    (``imagenet/eca_resnet50_paper.yaml``), so the README's ``--config train_configs/...`` works from any folder.
    """
    path = Path(config)
    parts = path.parts[1:] if path.parts[:1] == ('train_configs',) else path.parts
    if path.exists() or path.is_absolute() or '..' in parts:
        yield path
        return
    packaged = data_file(RECIPES, '/'.join(parts))
    if not (packaged.is_file() or packaged.is_dir()):
        yield path
        return
    with data_path(RECIPES, '/'.join(parts)) as packaged:
        yield packaged


@contextlib.contextmanager
def _packaged_config(argv: Sequence[str]) -> Iterator[List[str]]:
    """``argv`` with a ``--config``/``-c`` recipe that is not a file here replaced by eca-timm's packaged copy."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg in ('-c', '--config') and i + 1 < len(argv):
            with recipe_file(argv[i + 1]) as path:
                yield argv[:i + 1] + [str(path)] + argv[i + 2:]
            return
        if arg.startswith('--config='):
            with recipe_file(arg.split('=', 1)[1]) as path:
                yield argv[:i] + [f'--config={path}'] + argv[i + 1:]
            return
    yield argv


class CpuDistributedDataParallel(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that drops ``device_ids`` / ``output_device`` for a module living on the CPU.

    PyTorch requires both to be None for CPU modules; timm's train.py always passes ``device_ids=[device]``.
    """

    def __init__(self, module: torch.nn.Module, device_ids: Any = None, output_device: Any = None,
                 *args: Any, **kwargs: Any) -> None:
        if device_ids is not None and all(p.device.type == 'cpu' for p in module.parameters()):
            device_ids = output_device = None
        super().__init__(module, device_ids, output_device, *args, **kwargs)


@contextlib.contextmanager
def cpu_ddp_without_device_ids() -> Iterator[None]:
    """Within the block, ``torch.nn.parallel.DistributedDataParallel`` is ``CpuDistributedDataParallel``."""
    original = torch.nn.parallel.DistributedDataParallel
    torch.nn.parallel.DistributedDataParallel = CpuDistributedDataParallel
    try:
        yield
    finally:
        torch.nn.parallel.DistributedDataParallel = original


@contextlib.contextmanager
def run_folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s trainer lock for the block (``fcntl.flock``; the OS releases it when the holder dies).

    Raises ``BlockingIOError`` naming the holder's pid when another process holds it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, 'a+') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or '?'
            raise BlockingIOError(f'run folder {folder} is being written by another trainer (pid {holder}): wait '
                                  f'for it to end, or stop it') from None
        f.seek(0)
        f.truncate()
        f.write(f'{os.getpid()}\n')
        f.flush()
        yield


def child_env(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment for an eca-timm child process that must die with this one (see ``die_with_parent``)."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """In a child started with ``child_env``: have the kernel kill this process when its parent dies (Linux's
    ``PR_SET_PDEATHSIG``; elsewhere nothing is done). Called first by the ``eca-timm`` executable."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith('linux'):
        return
    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0 \
            and os.getppid() != int(parent):  # the parent died before the call
        os.kill(os.getpid(), signal.SIGKILL)


class EpochProgress:
    """Turns the epochs that appear in a run's summary.csv into lines: ``PREFIX: epoch k/N, top-1 x (best y)``.

    train.py appends one row per epoch after its evaluation, so polling the file needs no log parsing. Epochs
    already in the file when the run is (re)launched are not reported again, but count for "best".
    """

    def __init__(self, summary: Path, epochs: int, prefix: str, say: Callable[[str], None]):
        self.summary, self.epochs, self.prefix, self.say = summary, epochs, prefix, say
        self.reported = set(self._rows())

    def _rows(self) -> Dict[int, Dict[str, float]]:
        try:
            return read_summary(self.summary)
        except (OSError, ValueError):  # not written yet, or read mid-write: the next poll sees it
            return {}

    def poll(self) -> None:
        rows = self._rows()
        for epoch in sorted(e for e in rows if e not in self.reported and 'eval_top1' in rows[e]):
            best = max(rows[e]['eval_top1'] for e in rows if e <= epoch and 'eval_top1' in rows[e])
            self.say(f'{self.prefix}: epoch {epoch + 1}/{self.epochs}, top-1 {rows[epoch]["eval_top1"]:.1f} '
                     f'(best {best:.1f})')
            self.reported.add(epoch)


@contextlib.contextmanager
def _every(seconds: float, fn: Optional[Callable[[], None]]) -> Iterator[None]:
    """Call ``fn`` every ``seconds`` in a thread while the block runs."""
    if fn is None:
        yield
        return
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


def run_child(cmd: Sequence[str], log: Path, poll: Optional[Callable[[], None]] = None, poll_s: float = POLL_S,
              env: Optional[Dict[str, str]] = None) -> int:
    """Run ``cmd`` (an eca-timm child, which dies with this process) with its output appended to ``log``; call
    ``poll`` every ``poll_s`` seconds while it runs and once after. Returns its exit status."""
    with open(log, 'a') as f, _every(poll_s, poll):
        rc = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=child_env(env)).returncode
    if poll is not None:
        poll()
    return rc


@contextlib.contextmanager
def _extras_for_missing_modules(script: str) -> Iterator[None]:
    """A module a script needs that an eca-timm extra provides: one ImportError naming the extra."""
    try:
        yield
    except ModuleNotFoundError as e:
        extra = SCRIPT_EXTRAS.get((e.name or '').split('.')[0])
        if extra is None:
            raise
        raise ImportError(f'timm\'s {script} needs {e.name}, which is not installed: '
                          f'pip install \'eca-timm[{extra}]\'') from e


@contextlib.contextmanager
def _interrupt_reaches_the_caller() -> Iterator[None]:
    """Ctrl-C ends the command: train.py catches KeyboardInterrupt and returns as if done, so it is raised again
    once the script returns (train.py has saved the checkpoints of its finished epochs)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    seen = []

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if seen:
        raise KeyboardInterrupt


def run_script(script: os.PathLike, argv: Sequence[str] = (), scripts_dir: Optional[os.PathLike] = None) -> None:
    """Check the arguments of timm's scripts (``preflight``), then run ``script`` as ``__main__`` (``eca_timm`` is
    imported already)."""
    path = resolve_script(script, scripts_dir)
    with _packaged_config(argv) as argv, _extras_for_missing_modules(path.name):
        is_train = path.name == 'train.py'
        args = None  # a script of the user's own is run unchecked: it might do its work at import
        if path.name in SCRIPT_NAMES:
            args = check_train_args(path, argv) if is_train else parse_script_args(path, argv)
        if args is not None:
            check_runnable(path.name, args)
        folder = run_folder(args) if is_train and int(os.environ.get('RANK', '0')) == 0 else None
        if folder is not None:
            check_run_folder(args)
        with run_folder_lock(folder) if folder is not None else contextlib.nullcontext():
            if folder is not None:
                check_run_folder(args)  # again under the lock: another trainer may have written it meanwhile
            distributed = int(os.environ.get('WORLD_SIZE', '1')) > 1
            with script_argv(path, argv), _interrupt_reaches_the_caller(), \
                    cpu_ddp_without_device_ids() if distributed else contextlib.nullcontext():
                runpy.run_path(str(path), run_name='__main__')


def _run(args: argparse.Namespace) -> int:
    if args.script is None:
        raise ValueError(f'name the timm script to run ({", ".join(SCRIPT_NAMES)}) and its arguments, e.g. '
                         f'eca-timm run train.py --config train_configs/fashion_mnist/eca_resnet18_cifar.yaml '
                         f'--data-dir DIR')
    run_script(args.script, args.args, args.scripts_dir)
    return 0


EXAMPLES = '''examples:
  eca-timm run train.py --config train_configs/fashion_mnist/eca_resnet18_cifar.yaml --data-dir DATA
  eca-timm run validate.py --model local-dir:hub/my_model --pretrained --data-dir DATA --device cpu
  torchrun --nproc_per_node 8 -m eca_timm.run train.py --config train_configs/imagenet/eca_resnet50_paper.yaml
'''


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'run', help='run a timm script (train.py, validate.py, ...) with the ECA models registered',
        description='Run one of timm\'s scripts (train.py, validate.py, benchmark.py, inference.py) exactly as '
                    '"python SCRIPT ARGS" would, with the ECA models in timm\'s registry. SCRIPT is a path or a '
                    'bare name looked up in --scripts-dir, $TIMM_SCRIPTS, then ~/.cache/eca-timm/timm-scripts '
                    '(eca-timm scripts fills it). Its arguments are checked first: the recipe\'s keys and value '
                    'types, the model, the data, the device, the checkpoints, and an --experiment folder that '
                    'already holds a run. "python -m eca_timm.run" is the same command, also under torchrun.',
        epilog=EXAMPLES)
    p.add_argument('--scripts-dir', default=None,
                   help='folder with timm\'s scripts (default: $TIMM_SCRIPTS, then ~/.cache/eca-timm/timm-scripts)')
    p.add_argument('script', nargs='?', help='a timm script: a path, or a name such as train.py or validate.py')
    p.add_argument('args', nargs=argparse.REMAINDER, help='the script\'s own arguments')
    p.set_defaults(func=_run, configures_logging=True)  # timm's scripts set up their own logging
