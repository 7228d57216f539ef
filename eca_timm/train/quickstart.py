"""``eca-timm quickstart``: train, evaluate, publish and reload an ECA model end to end on a CPU in minutes.

1. timm's scripts: ``--scripts-dir``, ``$TIMM_SCRIPTS`` or the cache (``~/.cache/eca-timm/timm-scripts``);
   if none has them, a shallow clone of the release tag matching the installed timm fills the cache (online).
2. The Fashion-MNIST subset shipped with eca-timm (1,000 training, 200 held-out images) as a folder dataset.
3. timm's train.py trains the CIFAR-stem ECA-ResNet-18 with ``train_configs/fashion_mnist/eca_resnet18_cifar.yaml``.
4. timm's validate.py evaluates model_best.pth.tar on the held-out images.
5. ``eca-timm publish --dry-run`` writes a Hub-ready folder; timm reloads it with ``local-dir:`` and validate.py
   evaluates the reloaded model.

The terminal shows the steps, one line per trained epoch and the two accuracies; each step's own output goes to
``OUT/<step>.log``. The arguments are checked before anything is written, and a step that fails (or Ctrl-C)
removes what the quickstart wrote into OUT, after printing the end of that step's log.
"""
import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import timm

from .._io import read_json, read_text, read_train_args
from .datasets import write_image_folder
from .preflight import check_runnable, check_train_args, scheduled_epochs
from .run import EpochProgress, default_scripts_cache, find_scripts_dir, recipe_file, run_child
from .scripts import fetch_scripts

__all__ = ['RECIPE', 'quickstart']

RECIPE = 'fashion_mnist/eca_resnet18_cifar.yaml'  # in train_configs/, shipped in the package
FASHION_MNIST_HUB_ID = 'zalando-datasets/fashion_mnist'  # the card's dataset
LOG_TAIL = 30  # lines of a failed step's log shown


def _say(line: str) -> None:
    print(line, flush=True)


def card_args(epochs: int, counts: dict) -> List[str]:
    """``eca-timm publish`` arguments that make the card say what the data and the weights are: a demo."""
    use = (f"A demo of eca-timm's workflow (`eca-timm quickstart`), not a Fashion-MNIST model to use: {epochs} "
           f"epochs on a subset of Fashion-MNIST shipped with eca-timm, {counts['train']:,} training images (from its "
           f"training file) and {counts['validation']:,} evaluation images (from its test file; Fashion-MNIST has no "
           f"validation split). {counts['validation']:,} images measure the accuracy only roughly.")
    return ['--dataset', FASHION_MNIST_HUB_ID, '--eval-split', 'test', '--intended-use', use]


def _step(n: int, text: str) -> float:
    _say(f'\n== [{n}/5] {text}')
    return time.monotonic()


def _child(out: Path, name: str, cmd: List[str], progress: Optional[EpochProgress] = None) -> None:
    """Run one step's command with its output in ``out/<name>.log``; a failure shows the log's end and raises."""
    log = out / f'{name}.log'
    rc = run_child(cmd, log, progress.poll if progress else None)
    if rc != 0:
        tail = read_text(log).splitlines()[-LOG_TAIL:]
        print('\n'.join([f'--- last lines of {log}:', *tail, '---']), file=sys.stderr, flush=True)
        raise ChildProcessError(f'{name} failed (exit status {rc}); its output is above')


def _runner(out: Path, name: str, scripts: Path, script: str, args: List[str],
            progress: Optional[EpochProgress] = None) -> None:
    cmd = [sys.executable, '-m', 'eca_timm.run', '--scripts-dir', str(scripts), script, *args]
    _child(out, name, cmd, progress)


def _validate(out: Path, name: str, scripts: Path, model_args: List[str], data: Path) -> float:
    results = out / f'{name}.json'
    _runner(out, name, scripts, 'validate.py', model_args + [
        '--data-dir', str(data), '--split', 'validation', '--device', 'cpu', '--workers', '2',
        '--results-file', str(results), '--results-format', 'json'])
    return float(read_json(results)['top1'])


def quickstart(out: os.PathLike, epochs: Optional[int] = None, scripts_dir: Optional[os.PathLike] = None,
               recipe: os.PathLike = RECIPE) -> dict:
    """Run the five steps into ``out``; return the top-1 of model_best and of its published, reloaded copy."""
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f'{out} is not empty: pass --out with a new folder')
    with recipe_file(recipe) as path:
        if not path.is_file():
            raise FileNotFoundError(
                f'recipe {recipe} not found: pass --recipe with a train.py YAML recipe')
        return _quickstart(out, epochs, scripts_dir, path)


def _remove_written(out: Path, existed: bool) -> None:
    """Remove what the quickstart wrote: ``out`` itself, or the contents of the empty folder it was given."""
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _quickstart(out: Path, epochs: Optional[int], scripts_dir: Optional[os.PathLike], recipe: Path) -> dict:
    start = _step(1, 'timm\'s scripts')
    scripts = find_scripts_dir(scripts_dir)
    if scripts is None:
        _say(f'not found; cloning timm v{timm.__version__}\'s scripts into {default_scripts_cache()}')
        scripts = fetch_scripts()
    _say(f'using {scripts}')
    train_args = ['--config', str(recipe), '--output', str(out), '--experiment', 'train']
    if epochs is not None:
        train_args += ['--epochs', str(epochs)]
    checked = check_train_args(scripts / 'train.py', train_args)  # before anything is written
    check_runnable('train.py', checked)
    existed = out.exists()
    try:
        return _steps(out, scripts, train_args, scheduled_epochs(checked), start)
    except BaseException:
        _remove_written(out, existed)
        raise


def _steps(out: Path, scripts: Path, train_args: List[str], epochs: int, start: float) -> dict:
    _step(2, 'Fashion-MNIST subset as a folder dataset')
    data, counts = write_image_folder(out / 'data')
    _say(f'{data}: {counts["train"]} training, {counts["validation"]} held-out validation images')

    t = _step(3, f'train.py: CIFAR-stem ECA-ResNet-18 on the CPU (log: {out / "train.log"})')
    run_dir = out / 'train'
    _runner(out, 'train', scripts, 'train.py', train_args + ['--data-dir', str(data)],
            EpochProgress(run_dir / 'summary.csv', epochs, 'train.py', _say))
    train_minutes = (time.monotonic() - t) / 60
    args = read_train_args(run_dir / 'args.yaml')
    model_args = ['--num-classes', str(args['num_classes']), '--input-size', *map(str, args['input_size']),
                  '--mean', *map(str, args['mean']), '--std', *map(str, args['std']),
                  '--crop-pct', str(args['crop_pct']), '--batch-size', str(args['batch_size'])]

    _step(4, 'validate.py: model_best.pth.tar on the held-out images')
    top1 = _validate(out, 'validate', scripts, ['--model', args['model'], '--checkpoint',
                                                 str(run_dir / 'model_best.pth.tar')] + model_args, data)
    _say(f'top-1 {top1:.2f}%')
    result = {'top1': top1, 'train_minutes': train_minutes, 'epochs': args['epochs']}

    _step(5, 'eca-timm publish --dry-run, reload with local-dir:, validate.py')
    hub = out / 'hub'
    _child(out, 'publish', [sys.executable, '-m', 'eca_timm.cli', 'publish', str(run_dir), '--repo-id',
                            f'local/{args["model"]}.fashion_mnist_quickstart', *card_args(args['epochs'], counts),
                            '--dry-run', '--out', str(hub)])
    reloaded_args = ['--model', f'local-dir:{hub}'] + model_args
    result['reloaded_top1'] = _validate(out, 'validate_reloaded', scripts, reloaded_args, data)

    _say(f'\nECA-ResNet-18 (CIFAR stem), {args["epochs"]} epochs on {counts["train"]} Fashion-MNIST images: '
         f'top-1 {top1:.2f}% on {counts["validation"]} held-out images (chance 10%); training took '
         f'{train_minutes:.1f} min, all steps {(time.monotonic() - start) / 60:.1f} min.')
    _say(f'reloaded from the published folder (local-dir:{hub}): top-1 {result["reloaded_top1"]:.2f}%')
    _say(f'outputs in {out} (each step\'s log: {out}/<step>.log)')
    return result


def _run(args: argparse.Namespace) -> int:
    quickstart(args.out, args.epochs, args.scripts_dir, args.recipe)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'quickstart', help='train, evaluate, publish and reload an ECA model on a CPU',
        description='Train, evaluate, publish and reload an ECA model end to end on a CPU in minutes: timm\'s '
                    'train.py trains the CIFAR-stem ECA-ResNet-18 on the Fashion-MNIST subset shipped with '
                    'eca-timm, validate.py evaluates it, eca-timm publish --dry-run writes a Hub-ready folder, '
                    'and validate.py evaluates the model reloaded from it with local-dir:. timm\'s scripts are '
                    'cloned into the cache first when none are found (online).',
        epilog='examples:\n  eca-timm quickstart\n  eca-timm quickstart --out qs --epochs 2')
    p.add_argument('--scripts-dir', default=None, help='folder with timm\'s scripts (default: $TIMM_SCRIPTS, cache, '
                                                       'else a clone of the matching timm release)')
    p.add_argument('--out', default='eca-timm-quickstart', help='output folder (new or empty)')
    p.add_argument('--epochs', type=int, default=None, help='override the recipe\'s epochs')
    p.add_argument('--recipe', default=RECIPE,
                   help='train.py recipe: a file, or a recipe shipped in train_configs/ (default: the Fashion-MNIST one)')
    p.set_defaults(func=_run, interrupted_note='what it wrote into --out was removed')
