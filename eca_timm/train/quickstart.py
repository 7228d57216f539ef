"""``eca-timm quickstart``: train, evaluate, publish and reload an ECA model end to end on a CPU in minutes.

1. timm's scripts: ``--scripts-dir``, ``$TIMM_SCRIPTS`` or the cache (``~/.cache/eca-timm/timm-scripts``);
   if none has them, a shallow clone of the release tag matching the installed timm fills the cache (online).
2. The Fashion-MNIST subset shipped with eca-timm (1,000 training, 200 held-out images) as a folder dataset.
3. timm's train.py trains the CIFAR-stem ECA-ResNet-18 with ``train_configs/fashion_mnist/eca_resnet18_cifar.yaml``.
4. timm's validate.py evaluates model_best.pth.tar on the held-out images.
5. ``eca-timm publish --dry-run`` writes a Hub-ready folder; timm reloads it with ``local-dir:`` and validate.py
   evaluates the reloaded model.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import timm
import yaml

from .datasets import write_image_folder
from .run import default_scripts_cache, find_scripts_dir, recipe_file
from .scripts import fetch_scripts

__all__ = ['RECIPE', 'quickstart']

RECIPE = 'fashion_mnist/eca_resnet18_cifar.yaml'  # in train_configs/, shipped in the package
FASHION_MNIST_HUB_ID = 'zalando-datasets/fashion_mnist'  # the card's dataset


def card_args(epochs: int, counts: dict) -> List[str]:
    """``eca-timm publish`` arguments that make the card say what the data and the weights are: a demo."""
    use = (f"A demo of eca-timm's workflow (`eca-timm quickstart`), not a Fashion-MNIST model to use: {epochs} "
           f"epochs on a subset of Fashion-MNIST shipped with eca-timm, {counts['train']:,} training images (from its "
           f"training file) and {counts['validation']:,} evaluation images (from its test file; Fashion-MNIST has no "
           f"validation split). {counts['validation']:,} images measure the accuracy only roughly.")
    return ['--dataset', FASHION_MNIST_HUB_ID, '--eval-split', 'test', '--intended-use', use]


def _step(n: int, text: str) -> float:
    print(f'\n== [{n}/5] {text}', flush=True)
    return time.monotonic()


def _runner(scripts: Path, script: str, args: List[str]) -> None:
    cmd = [sys.executable, '-m', 'eca_timm.run', '--scripts-dir', str(scripts), script, *args]
    subprocess.run(cmd, check=True)


def _validate(scripts: Path, model_args: List[str], data: Path, results: Path) -> float:
    _runner(scripts, 'validate.py', model_args + ['--data-dir', str(data), '--split', 'validation', '--device',
                                                  'cpu', '--workers', '2', '--results-file', str(results),
                                                  '--results-format', 'json'])
    return float(json.loads(results.read_text())['top1'])


def quickstart(out: os.PathLike, epochs: Optional[int] = None, scripts_dir: Optional[os.PathLike] = None,
               recipe: os.PathLike = RECIPE) -> dict:
    """Run the five steps into ``out``; return the top-1 of model_best and of its published, reloaded copy."""
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f'{out} is not empty: pass --out with a new folder')
    with recipe_file(recipe) as path:
        if not path.is_file():
            raise FileNotFoundError(
                f'recipe {recipe} not found: pass --recipe with a train.py YAML recipe')
        return _quickstart(out, epochs, scripts_dir, path)


def _quickstart(out: Path, epochs: Optional[int], scripts_dir: Optional[os.PathLike], recipe: Path) -> dict:
    start = t = _step(1, 'timm\'s scripts')
    scripts = find_scripts_dir(scripts_dir)
    if scripts is None:
        print(f'not found; cloning timm v{timm.__version__}\'s scripts into {default_scripts_cache()}', flush=True)
        scripts = fetch_scripts()
    print(f'using {scripts}', flush=True)

    _step(2, 'Fashion-MNIST subset as a folder dataset')
    data, counts = write_image_folder(out / 'data')
    print(f'{data}: {counts["train"]} training, {counts["validation"]} held-out validation images', flush=True)

    t = _step(3, 'train.py: CIFAR-stem ECA-ResNet-18 on the CPU')
    train_args = ['--config', str(recipe), '--data-dir', str(data), '--output', str(out), '--experiment', 'train']
    if epochs:
        train_args += ['--epochs', str(epochs)]
    _runner(scripts, 'train.py', train_args)
    run_dir = out / 'train'
    train_minutes = (time.monotonic() - t) / 60
    args = yaml.safe_load((run_dir / 'args.yaml').read_text())
    model_args = ['--num-classes', str(args['num_classes']), '--input-size', *map(str, args['input_size']),
                  '--mean', *map(str, args['mean']), '--std', *map(str, args['std']),
                  '--crop-pct', str(args['crop_pct']), '--batch-size', str(args['batch_size'])]

    _step(4, 'validate.py: model_best.pth.tar on the held-out images')
    top1 = _validate(scripts, ['--model', args['model'], '--checkpoint', str(run_dir / 'model_best.pth.tar')]
                     + model_args, data, out / 'validate.json')
    result = {'top1': top1, 'train_minutes': train_minutes, 'epochs': args['epochs'], }

    _step(5, 'eca-timm publish --dry-run, reload with local-dir:, validate.py')
    hub = out / 'hub'
    subprocess.run([sys.executable, '-m', 'eca_timm.cli', 'publish', str(run_dir), '--repo-id',
                    f'local/{args["model"]}.fashion_mnist_quickstart', *card_args(args['epochs'], counts),
                    '--dry-run', '--out', str(hub)], check=True)
    result['reloaded_top1'] = _validate(scripts, ['--model', f'local-dir:{hub}'] + model_args, data,
                                        out / 'validate_reloaded.json')

    print(f'\nECA-ResNet-18 (CIFAR stem), {args["epochs"]} epochs on {counts["train"]} Fashion-MNIST images: '
          f'top-1 {top1:.2f}% on {counts["validation"]} held-out images (chance 10%); training took '
          f'{train_minutes:.1f} min, all steps {(time.monotonic() - start) / 60:.1f} min.')
    print(f'reloaded from the published folder with local-dir:: top-1 {result["reloaded_top1"]:.2f}%')
    print(f'outputs in {out}')
    return result


def _run(args: argparse.Namespace) -> int:
    try:
        quickstart(args.out, args.epochs, args.scripts_dir, args.recipe)
    except (FileExistsError, FileNotFoundError, RuntimeError) as e:
        print(f'eca-timm quickstart: error: {e}', file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f'eca-timm quickstart: error: step failed ({" ".join(e.cmd[:6])} ...), exit {e.returncode}',
              file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser('quickstart', help='train, evaluate, publish and reload an ECA model on a CPU',
                              description=__doc__.split('\n\n')[0])
    p.add_argument('--scripts-dir', default=None, help='folder with timm\'s scripts (default: $TIMM_SCRIPTS, cache, '
                                                       'else a clone of the matching timm release)')
    p.add_argument('--out', default='eca-timm-quickstart', help='output folder (new or empty)')
    p.add_argument('--epochs', type=int, default=None, help='override the recipe\'s epochs')
    p.add_argument('--recipe', default=RECIPE,
                   help='train.py recipe: a file, or a recipe shipped in train_configs/ (default: the Fashion-MNIST one)')
    p.set_defaults(func=_run)
