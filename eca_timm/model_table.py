"""The ``eca-timm models`` table: parameters, compute, ECA kernel sizes and pretrained tags per model.

It lists the ECA-Net releases (``MODEL_MODULES``) and the attention study's CIFAR-10 models (``STUDY_MODULES``:
no attention, SE, CBAM, ECA, as CIFAR-stem ResNet-18s and as the reproducibility report's ImageNet-stem ones), each
marked with its kind; compute is counted at each model's own input size
(224 for the releases, 32 for the study models) unless ``--img-size`` sets one for all.
"""
import argparse
import json
from typing import Any, Dict, List, Optional

import timm

from ._measure import params_and_flops
from .models import MODEL_MODULES, STUDY_MODULES
from .models._pretrained import is_published

__all__ = ['model_names', 'study_model_names', 'model_info', 'format_table']

KINDS = {'release': 'ECA-Net release', 'study': 'study model (CIFAR-10)'}


def model_names() -> List[str]:
    """The ECA-Net models this plugin registers with timm."""
    return timm.list_models(module=list(MODEL_MODULES))


def study_model_names() -> List[str]:
    """The attention study's CIFAR-10 models (ResNet-18 with no attention, SE, CBAM, ECA; both presets)."""
    return timm.list_models(module=list(STUDY_MODULES))


def model_info(name: str, img_size: Optional[int] = None) -> Dict[str, Any]:
    """Parameters, GFLOPs and GMACs at ``img_size`` (default: the model's own input size; torch's FlopCounterMode,
    on the meta device), ECA kernel sizes (None: no ECA), pretrained tags, and kind (release or study)."""
    model = timm.create_model(name, device='meta').eval()
    size = img_size or model.pretrained_cfg['input_size'][-1]
    params, flops = params_and_flops(model, (3, size, size))
    sizes = getattr(model, 'eca_kernel_sizes', None)
    return {
        'model': name,
        'params': params,
        'gflops': flops / 1e9,
        'gmacs': flops / 2e9,
        'eca_kernel_sizes': list(sizes) if sizes is not None else None,
        'pretrained_tags': {t.split('.', 1)[1]: 'published' if is_published(t) else 'unpublished'
                            for t in timm.list_models(name, include_tags=True) if '.' in t},
        'img_size': size,
        'kind': 'study' if name in study_model_names() else 'release',
    }


def format_table(rows: List[Dict[str, Any]]) -> str:
    """A markdown table of ``model_info`` rows."""
    lines = ['| model | params | GFLOPs | GMACs | ECA k per stage | pretrained tags | input | kind |',
             '|---|---:|---:|---:|---|---|---:|---|']
    for r in rows:
        sizes = r['eca_kernel_sizes']
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['gflops']:.2f} | {r['gmacs']:.2f} | "
            f"{','.join(map(str, sizes)) if sizes else '-'} | "
            f"{', '.join(f'{t} ({state})' for t, state in r['pretrained_tags'].items()) or '-'} | "
            f"{r['img_size']}x{r['img_size']} | {KINDS[r['kind']]} |")
    return '\n'.join(lines)


def _run(args: argparse.Namespace) -> int:
    rows = [model_info(n, args.img_size) for n in model_names() + study_model_names()]
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'models', help='list the ECA models with parameters, compute and kernel sizes',
        description='List the ECA-Net models and the attention study\'s CIFAR-10 models (marked as study '
                    'models): parameters, GFLOPs and GMACs of one image (torch\'s FlopCounterMode), ECA kernel '
                    'size per stage, and the state of each pretrained tag.')
    p.add_argument('--img-size', type=int, default=None,
                   help='input resolution for the compute columns (default: each model\'s own, 224 or 32)')
    p.add_argument('--json', action='store_true', help='print JSON instead of a markdown table')
    p.set_defaults(func=_run)
