"""What the runner checks before a timm script starts, so bad input fails at once with what to fix.

``check_train_args`` checks train.py's arguments, with train.py's own parser: the ``--config`` recipe (read with
clear errors, its keys and the types of its values: train.py itself ignores an unknown key, and an ill-typed value
ends in a 96-line usage text that does not name the recipe), the model name, the number of epochs, a folder
dataset's train / validation split folders (timm would silently train and evaluate on the whole folder).

``check_runnable`` checks what this machine must have for any of timm's scripts: the device (timm's scripts
default to ``--device cuda``), readable checkpoints (``--checkpoint``, ``--resume``, ``--initial-checkpoint``),
a torchvision dataset's files or a download that works. ``check_run_folder`` refuses an ``--experiment`` folder
that already holds a train.py run unless ``--resume`` continues it (train.py would write over its checkpoints and
append a second header to its summary.csv).
"""
import argparse
import contextlib
import functools
import importlib
import os
import pickle
import runpy
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence

from .._io import read_yaml_mapping
from ..models import did_you_mean

__all__ = ['TrainArgs', 'check_run_folder', 'check_runnable', 'check_train_args', 'parse_script_args',
           'parse_train_args', 'run_folder', 'scheduled_epochs', 'script_argv']

RECIPE = 'a train.py recipe (a YAML mapping of train.py argument names to values)'
# The files train.py writes into its run folder; the study's train.log and the runner's lock are not a run.
RUN_FILES = ('args.yaml', 'summary.csv', 'last.pth.tar', 'model_best.pth.tar')
CHECKPOINT_ARGS = ('checkpoint', 'resume', 'initial_checkpoint')
# torch.save's legacy (non-zip) format starts with its magic number, pickled with protocol 2
_LEGACY_TORCH_MAGIC = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)


@contextlib.contextmanager
def script_argv(script: Path, argv: Sequence[str]) -> Iterator[None]:
    """``sys.argv`` and ``sys.path`` as ``python SCRIPT ARGV`` has them, for the block."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(script.parent))
    try:
        yield
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


class TrainArgs(NamedTuple):
    """train.py's parsed arguments, its ``--config`` file and mapping (empty without one), and its parser."""
    args: argparse.Namespace
    config_path: str
    config: Dict[str, Any]
    parser: argparse.ArgumentParser


def _script_namespace(script: Path, argv: Sequence[str]) -> Dict[str, Any]:
    """The module namespace of one of timm's scripts, run without its ``__main__`` block (it parses, not trains)."""
    with script_argv(script, argv):
        return runpy.run_path(str(script), run_name='eca_timm_script_args')


def parse_train_args(train_py: os.PathLike, argv: Sequence[str]) -> TrainArgs:
    """Parse ``argv`` with train.py's own ``_parse_args`` (``--config`` YAML included), without training."""
    train_py = Path(train_py)
    ns = _script_namespace(train_py, argv)
    if '_parse_args' not in ns or 'config_parser' not in ns:
        raise ValueError(f'{train_py} does not look like timm\'s train.py (no _parse_args / config_parser)')
    config_path = ns['config_parser'].parse_known_args(list(argv))[0].config
    config: Dict[str, Any] = {}
    if config_path:
        if not Path(config_path).is_file():
            raise FileNotFoundError(f'--config {config_path}: no such recipe file')
        config = read_yaml_mapping(config_path, RECIPE)
        _check_recipe(config, config_path, ns['parser'])
    with script_argv(train_py, argv):
        args, _ = ns['_parse_args']()
    return TrainArgs(args, config_path, config, ns['parser'])


def parse_script_args(script: os.PathLike, argv: Sequence[str]) -> Optional[argparse.Namespace]:
    """validate.py's, benchmark.py's or inference.py's arguments with the script's own parser (None: it has none)."""
    parser = _script_namespace(Path(script), argv).get('parser')
    if not isinstance(parser, argparse.ArgumentParser):
        return None
    return parser.parse_known_args(list(argv))[0]


def _value_problem(action: argparse.Action, value: Any) -> Optional[str]:
    """Why train.py could not use ``value`` for ``action`` (argparse applies no type to a non-string default)."""
    if value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return None if isinstance(value, bool) else 'takes true or false'
    if not isinstance(action, argparse._StoreAction):  # e.g. timm's ParseKwargs (--model-kwargs): a mapping
        return 'takes a mapping of keyword arguments' if isinstance(action.default, dict) and \
            not isinstance(value, dict) else None
    many = action.nargs in ('+', '*') or isinstance(action.nargs, int)
    if many and not isinstance(value, list):
        return f'takes a list of {action.nargs if isinstance(action.nargs, int) else "one or more"} values'
    if isinstance(action.nargs, int) and len(value) != action.nargs:
        return f'takes {action.nargs} values, not {len(value)}'
    kinds = {int: ((int,), 'an integer'), float: ((int, float), 'a number'), str: ((str,), 'a string'),
             None: ((str,), 'a string')}
    for item in (value if many else [value]):
        if action.type in kinds:
            ok, name = kinds[action.type]
            if not many and isinstance(item, str) and callable(action.type):
                try:  # argparse converts a string default (YAML reads 1e-3 as one)
                    item = action.type(item)
                except ValueError:
                    return f'takes {name}'
            if isinstance(item, bool) or not isinstance(item, ok):
                return f'takes {name}'
        if action.choices is not None and item not in action.choices:
            return f'takes one of {", ".join(map(str, action.choices))}'
    return None


def _check_recipe(config: Dict[str, Any], path: str, parser: argparse.ArgumentParser) -> None:
    """Every key a train.py argument (train.py ignores unknown ones), every value of the type it takes."""
    actions = {a.dest: a for a in parser._actions}
    unknown = sorted(set(config) - set(actions))
    if unknown:
        hints = [f'{key!r}{did_you_mean(key, actions)}' for key in unknown]
        raise ValueError(
            f'recipe {path}: unknown train.py argument(s) {", ".join(hints)}. Recipe keys are train.py '
            f'argument names with "_" for "-" (e.g. batch_size for --batch-size); see `python train.py --help`.')
    problems = [f'{key}: {value!r} ({actions[key].option_strings[-1] if actions[key].option_strings else key} '
                f'{why})' for key, value in config.items() if (why := _value_problem(actions[key], value))]
    if problems:
        raise ValueError(f'recipe {path}: {"; ".join(problems)}')


def scheduled_epochs(args: argparse.Namespace) -> int:
    """Epochs train.py will run for ``args``: timm's scheduler factory decides (warmup prefix, cooldown, cycles)."""
    import torch
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.lr or 0.1)
    _, num_epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=1)
    return num_epochs


def _split_missing(root: Path, split: str) -> bool:
    from timm.data.dataset_factory import _search_split  # timm's own split lookup, synonyms included
    return Path(_search_split(str(root), split)) == root


def check_train_args(train_py: os.PathLike, argv: Sequence[str]) -> argparse.Namespace:
    """Parse train.py's arguments and fail with what to fix on input train.py would accept silently or late."""
    args = parse_train_args(train_py, argv).args
    for module in args.device_modules or ():
        importlib.import_module(module)
    import timm
    if ':' not in args.model and not timm.is_model(args.model):
        hint = did_you_mean(args.model, timm.list_models(), n=3)
        raise ValueError(f'unknown model {args.model!r}: not in timm\'s registry{hint}. `eca-timm models` lists the '
                         f'ECA models, `timm.list_models()` all of them; add the module defining it to device_modules.')
    if args.epochs < 1:
        raise ValueError(f'--epochs must be at least 1, got {args.epochs}')
    try:
        scheduled_epochs(args)
    except (AssertionError, ValueError) as e:  # timm's scheduler factory asserts on impossible schedules
        raise ValueError(f'train.py cannot schedule --epochs {args.epochs} with --sched {args.sched} '
                         f'(warmup {args.warmup_epochs}, cooldown {args.cooldown_epochs}): {e or "rejected"}') from e

    data_dir = args.data_dir or args.data
    if data_dir and (not args.dataset or args.dataset.startswith('folder')):
        root = Path(data_dir)
        if not root.exists():
            raise FileNotFoundError(f'dataset folder {root} does not exist (--data-dir)')
        if root.is_dir():
            missing = [s for s in (args.train_split, args.val_split) if s and _split_missing(root, s)]
            if missing:
                raise ValueError(
                    f'dataset folder {root} has no {" / ".join(repr(s) for s in missing)} split folder: timm '
                    f'would train and evaluate on the whole folder. Put the images in {root}/train/<class>/ and '
                    f'{root}/validation/<class>/ (or pass --train-split / --val-split with the folder names).')
    return args


def _check_device(script: str, args: argparse.Namespace) -> None:
    import torch
    device = getattr(args, 'device', None)
    needs_cuda = (isinstance(device, str) and device.split(':')[0] == 'cuda') or \
        getattr(args, 'dist_backend', None) == 'nccl'
    if needs_cuda and not torch.cuda.is_available():
        raise ValueError(f'{script} would run on --device {device} (timm\'s scripts default to cuda), but CUDA is '
                         f'not available here: pass --device cpu')


def _check_checkpoint(flag: str, path: str) -> None:
    """A file torch.load (zip or legacy format) or safetensors can read, judged by its format alone."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'{flag} {path}: no such file')
    if p.suffix == '.safetensors':
        from safetensors import safe_open
        try:
            with safe_open(str(p), 'pt'):
                return
        except Exception as e:  # safetensors raises its own SafetensorError for a bad header
            raise ValueError(f'{flag} {path} is not a readable safetensors file ({e})') from e
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            if any(name.endswith('/data.pkl') or name == 'data.pkl' for name in z.namelist()):
                return
    with open(p, 'rb') as f:
        if f.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC:
            return
    raise ValueError(f'{flag} {path} is not a PyTorch checkpoint (neither a torch.save file nor safetensors): pass '
                     f'a train.py checkpoint such as RUN/model_best.pth.tar')


@functools.lru_cache(maxsize=None)
def _check_torch_dataset(name: str, root: str, split: str, download: bool) -> None:
    """A torchvision dataset (timm's ``torch/NAME``) is in ``root``, or downloads there (rank 0 only)."""
    from timm.data import create_dataset
    try:
        create_dataset(name, root=root, split=split, is_training=True, download=False)
        return
    except (OSError, RuntimeError) as e:  # torchvision: RuntimeError('Dataset not found or corrupted ...')
        missing = e
    if download and os.environ.get('LOCAL_RANK', '0') == '0':
        try:
            create_dataset(name, root=root, split=split, is_training=True, download=True)
            return
        except (OSError, RuntimeError) as e:  # urllib's URLError is an OSError
            raise ValueError(f'dataset {name}: the data is not in {root} and could not be downloaded '
                             f'({" ".join(str(e).split())}): put torchvision\'s files for it in {root} (copied from '
                             f'a machine where the download works), or pass --data-dir with the folder that has '
                             f'them') from e
    elif not download:
        raise ValueError(f'dataset {name}: the data is not in {root} ({" ".join(str(missing).split())}): put '
                         f'torchvision\'s files for it there, or pass --dataset-download') from missing


def check_runnable(script: str, args: argparse.Namespace) -> None:
    """What this machine must have for ``script`` with ``args``: the device, the checkpoints, the dataset."""
    _check_device(script, args)
    for dest in CHECKPOINT_ARGS:
        path = getattr(args, dest, None)
        if path:
            _check_checkpoint(f'--{dest.replace("_", "-")}', path)
    dataset = getattr(args, 'dataset', '') or ''
    root = getattr(args, 'data_dir', None) or getattr(args, 'data', None)
    if dataset.startswith('torch/') and root:
        split = getattr(args, 'train_split', None) or getattr(args, 'split', None) or 'train'
        _check_torch_dataset(dataset, str(root), split, bool(getattr(args, 'dataset_download', False)))


def run_folder(args: argparse.Namespace) -> Optional[Path]:
    """train.py's run folder for ``args`` when ``--experiment`` names it (a dated name is new by construction)."""
    if not getattr(args, 'experiment', None):
        return None
    return Path(args.output or './output/train') / args.experiment


def check_run_folder(args: argparse.Namespace) -> None:
    """Refuse an ``--experiment`` folder that holds an earlier train.py run, unless ``--resume`` continues it."""
    path = run_folder(args)
    if path is None or args.resume:
        return
    if path.exists() and not path.is_dir():
        raise FileExistsError(f'run folder {path} is a file: choose another --experiment name')
    held: List[str] = sorted(n for n in (os.listdir(path) if path.is_dir() else [])
                             if n in RUN_FILES or (n.startswith('checkpoint-') and n.endswith('.pth.tar')))
    if held:
        listed = ', '.join(held[:5]) + (', ...' if len(held) > 5 else '')
        resume = f'continue it with --resume {path / "last.pth.tar"}, or ' if 'last.pth.tar' in held else ''
        raise FileExistsError(
            f'run folder {path} already holds an earlier run ({listed}): {resume}start a new run with another '
            f'--experiment name (or none for a new dated folder)' + ('' if resume else ', or remove those files'))
