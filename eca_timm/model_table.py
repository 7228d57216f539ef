"""The ``eca-timm models`` table: parameters, compute, ECA kernel sizes and pretrained tags per model."""
import argparse
import json
from typing import Any, Dict, List

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import MODEL_MODULES
from .models._pretrained import is_published

__all__ = ['model_names', 'model_info', 'format_table']


def model_names() -> List[str]:
    """The models this plugin registers with timm."""
    return timm.list_models(module=list(MODEL_MODULES))


def model_info(name: str, img_size: int = 224) -> Dict[str, Any]:
    """Parameters, GFLOPs and GMACs at ``img_size`` (torch's FlopCounterMode, on the meta device), kernel sizes, tags."""
    model = timm.create_model(name, device='meta').eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, img_size, img_size, device='meta'))
    flops = counter.get_total_flops()
    return {
        'model': name,
        'params': sum(p.numel() for p in model.parameters()),
        'gflops': flops / 1e9,
        'gmacs': flops / 2e9,
        'eca_kernel_sizes': list(model.eca_kernel_sizes),
        'pretrained_tags': {t.split('.', 1)[1]: 'published' if is_published(t) else 'unpublished'
                            for t in timm.list_models(name, include_tags=True) if '.' in t},
    }


def format_table(rows: List[Dict[str, Any]]) -> str:
    """A markdown table of ``model_info`` rows."""
    lines = ['| model | params | GFLOPs | GMACs | ECA k per stage | pretrained tags |', '|---|---:|---:|---:|---|---|']
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['gflops']:.2f} | {r['gmacs']:.2f} | "
            f"{','.join(map(str, r['eca_kernel_sizes']))} | "
            f"{', '.join(f'{t} ({state})' for t, state in r['pretrained_tags'].items()) or '-'} |")
    return '\n'.join(lines)


def _run(args: argparse.Namespace) -> int:
    rows = [model_info(n, args.img_size) for n in model_names()]
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser('models', help='list the ECA models with parameters, compute and kernel sizes')
    p.add_argument('--img-size', type=int, default=224, help='input resolution for the compute columns')
    p.add_argument('--json', action='store_true', help='print JSON instead of a markdown table')
    p.set_defaults(func=_run)
