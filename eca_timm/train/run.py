"""Run timm's own scripts (train.py, validate.py, benchmark.py, inference.py) with the ECA models registered.

``eca-timm run SCRIPT ARGS...`` (or ``python -m eca_timm.run SCRIPT ARGS...``, also under ``torchrun``) imports
``eca_timm`` so its models are in timm's registry, then runs SCRIPT as ``__main__`` with ``ARGS`` as its
``sys.argv``, exactly like ``python SCRIPT ARGS...``. SCRIPT is a path or a bare name (``train.py``) looked up in
``--scripts-dir``, ``$TIMM_SCRIPTS``, then ``~/.cache/eca-timm/timm-scripts`` (``eca-timm quickstart`` fills it).

Before train.py starts, its arguments are parsed with train.py's own parser and checked, so bad input fails
at once with what to fix: a ``--config`` key train.py does not know (train.py itself silently ignores it), a
model name missing from timm's registry, a folder dataset without its train / validation split folders (timm
would silently train and evaluate on the whole folder).

CPU multi-process training: train.py wraps the model with ``DistributedDataParallel(device_ids=[device])``,
which PyTorch rejects for CPU modules, so ``torchrun ... train.py --device cpu`` fails upstream. Only when
running distributed (``WORLD_SIZE`` > 1), the runner swaps ``torch.nn.parallel.DistributedDataParallel`` for a
subclass that drops ``device_ids`` / ``output_device`` when all the module's parameters are on the CPU (what
PyTorch asks for CPU modules), and restores the original when the script ends. GPU runs are untouched.
"""
import argparse
import contextlib
import difflib
import importlib
import os
import runpy
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence

import torch
import yaml

from .._resources import RECIPES, data_file, data_path

__all__ = [
    'SCRIPT_NAMES', 'CpuDistributedDataParallel', 'TrainArgs', 'check_train_args', 'cpu_ddp_without_device_ids',
    'default_scripts_cache', 'find_scripts_dir', 'parse_train_args', 'recipe_file', 'resolve_script', 'run_script',
]

SCRIPT_NAMES = ('train.py', 'validate.py', 'benchmark.py', 'inference.py')
SCRIPTS_HINT = (
    'timm\'s scripts are not part of the timm wheel: get them with `eca-timm scripts` (clones the release matching '
    'your timm into ~/.cache/eca-timm/timm-scripts; it trains nothing), or offline copy train.py, validate.py, '
    'benchmark.py and inference.py of your timm version into a folder and set TIMM_SCRIPTS to it (or pass '
    '--scripts-dir)')


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


@contextlib.contextmanager
def _script_argv(script: Path, argv: Sequence[str]) -> Iterator[None]:
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(script.parent))  # as `python SCRIPT` does
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


def parse_train_args(train_py: os.PathLike, argv: Sequence[str]) -> TrainArgs:
    """Parse ``argv`` with train.py's own ``_parse_args`` (``--config`` YAML included), without training."""
    train_py = Path(train_py)
    with _script_argv(train_py, argv):
        ns = runpy.run_path(str(train_py), run_name='eca_timm_train_args')
        if '_parse_args' not in ns or 'config_parser' not in ns:
            raise ValueError(f'{train_py} does not look like timm\'s train.py (no _parse_args / config_parser)')
        config_path = ns['config_parser'].parse_known_args()[0].config
        config = {}
        if config_path:
            if not Path(config_path).is_file():
                raise FileNotFoundError(f'--config {config_path}: no such recipe file')
            with open(config_path) as f:
                config = yaml.safe_load(f) or {}
            if not isinstance(config, dict):
                raise ValueError(f'--config {config_path}: a recipe must be a YAML mapping of train.py '
                                 f'argument names to values, got {type(config).__name__}')
        args, _ = ns['_parse_args']()
    return TrainArgs(args, config_path, config, ns['parser'])


def _split_missing(root: Path, split: str) -> bool:
    from timm.data.dataset_factory import _search_split  # timm's own split lookup, synonyms included
    return Path(_search_split(str(root), split)) == root


def check_train_args(train_py: os.PathLike, argv: Sequence[str]) -> argparse.Namespace:
    """Parse train.py's arguments and fail with what to fix on input train.py would accept silently or late."""
    args, config_path, config, parser = parse_train_args(train_py, argv)
    dests = {a.dest for a in parser._actions}
    unknown = sorted(set(config) - dests)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(dests), n=1)
            hints.append(f'{key!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
        raise ValueError(
            f'recipe {config_path}: unknown train.py argument(s) {", ".join(hints)}. Recipe keys are train.py '
            f'argument names with "_" for "-" (e.g. batch_size for --batch-size); see `python train.py --help`.')

    for module in args.device_modules or ():
        importlib.import_module(module)
    import timm
    if ':' not in args.model and not timm.is_model(args.model):
        close = difflib.get_close_matches(args.model, timm.list_models(), n=3)
        hint = f' (close: {", ".join(close)})' if close else ''
        raise ValueError(f'unknown model {args.model!r}: not in timm\'s registry{hint}. `eca-timm models` lists the '
                         f'ECA models, `timm.list_models()` all of them; add the module defining it to device_modules.')

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


def _exec_script(path: Path, argv: Sequence[str]) -> None:
    distributed = int(os.environ.get('WORLD_SIZE', '1')) > 1
    with _script_argv(path, argv), (cpu_ddp_without_device_ids() if distributed else contextlib.nullcontext()):
        runpy.run_path(str(path), run_name='__main__')


def run_script(script: os.PathLike, argv: Sequence[str] = (), scripts_dir: Optional[os.PathLike] = None) -> None:
    """Check the arguments (train.py), then run ``script`` as ``__main__`` (``eca_timm`` is imported already)."""
    path = resolve_script(script, scripts_dir)
    with _packaged_config(argv) as argv:
        if path.name == 'train.py':
            check_train_args(path, argv)
        _exec_script(path, argv)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--scripts-dir', default=None,
                   help='folder with timm\'s scripts (default: $TIMM_SCRIPTS, then ~/.cache/eca-timm/timm-scripts)')
    p.add_argument('script', help='a timm script: a path, or a name such as train.py or validate.py')
    p.add_argument('args', nargs=argparse.REMAINDER, help='the script\'s own arguments')


def _run(args: argparse.Namespace) -> int:
    with _packaged_config(args.args) as argv:
        try:
            path = resolve_script(args.script, args.scripts_dir)
            if path.name == 'train.py':
                check_train_args(path, argv)
        except (FileNotFoundError, ValueError) as e:
            print(f'eca-timm run: error: {e}', file=sys.stderr)
            return 2
        _exec_script(path, argv)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'run', help='run a timm script (train.py, validate.py, ...) with the ECA models registered',
        description=__doc__.split('\n\n')[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=_run)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m eca_timm.run', description=__doc__.split('\n\n')[1])
    _add_arguments(parser)
    return _run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
