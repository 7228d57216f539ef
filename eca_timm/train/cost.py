"""What a study variant costs: parameters, GMACs and measured training / inference throughput.

Each variant's model is rebuilt from its runs' ``args.yaml`` (train.py's arguments: model, num_classes, in_chans,
model_kwargs; the input size as train.py resolved it), so the cost is that of the network the study trained.
Parameters and GMACs come from torch's ``FlopCounterMode`` on the meta device (no memory, no weights), as
``eca-timm models`` counts them. Throughput is timed the way ``eca-timm bench`` times (one training step: forward,
cross-entropy, backward, SGD step; one inference forward), every variant once per round in a rotated order so a
load change on a shared machine hits all of them alike; img/s is the median over rounds and the ratio to the
baseline the median of the per-round ratios. The results are JSON in bench's layout (``results`` rows with
``phase``, ``mode``, ``precision``, ``model``, ``img_per_s``, ``ratio``...), so a ``--output`` of
``eca-timm bench`` whose model labels match the variants (or their models) can be passed instead.
"""
import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

from .. import models as _models  # noqa: F401  (registers the plugin's models with timm)
from .._io import write_json
from .._measure import (check_device, clock as make_clock, device_name, interleaved_times, make_step,
                        params_and_flops, summarize)

__all__ = ['ModelSpec', 'spec_from_args', 'count_cost', 'measure_throughput', 'write_cost_json', 'read_throughput']

PHASES = ('train', 'infer')


@dataclass
class ModelSpec:
    """The network one study variant trained, as train.py built it."""
    model: str
    num_classes: int
    in_chans: int
    input_size: Tuple[int, int, int]  # (C, H, W) as train.py resolved it
    batch_size: int  # the study's training batch size
    model_kwargs: Dict[str, Any] = field(default_factory=dict)

    def create(self, device: Any = None) -> nn.Module:
        return timm.create_model(self.model, num_classes=self.num_classes, in_chans=self.in_chans,
                                 device=device, **self.model_kwargs)


def spec_from_args(args: Mapping[str, Any]) -> ModelSpec:
    """A run's ``args.yaml`` (train.py's arguments) -> the model it trained and its input size."""
    in_chans = args.get('in_chans') or (args['input_size'][0] if args.get('input_size') else 3)
    spec = ModelSpec(args['model'], args.get('num_classes') or 1000, in_chans, (in_chans, 224, 224),
                     args.get('batch_size') or 1, dict(args.get('model_kwargs') or {}))
    config = resolve_data_config(dict(args), model=spec.create(device='meta'))
    spec.input_size = tuple(int(v) for v in config['input_size'])
    return spec


def count_cost(spec: ModelSpec) -> Tuple[int, float]:
    """(parameters, GMACs of one image at the study's input size), counted on the meta device."""
    params, flops = params_and_flops(spec.create(device='meta'), spec.input_size)
    return params, flops / 2e9


def _time_phase(specs: Mapping[str, ModelSpec], reference: str, phase: str, dev: torch.device, batch_size: int,
                rounds: int, min_run_time: float, warmup: int, timer: Callable[[], float]) -> List[Dict[str, Any]]:
    steps = {}
    for label, spec in specs.items():
        torch.manual_seed(0)
        x = torch.randn(batch_size, *spec.input_size, device=dev)
        steps[label] = make_step(spec.create().to(dev), phase, x, num_classes=spec.num_classes)
        for _ in range(warmup):
            steps[label]()

    def progress(r: int, times: Dict[str, List[float]]) -> None:
        print(f'  {phase} round {r + 1}/{rounds}: ' + ', '.join(
            f'{k} {batch_size / v[-1]:.1f} img/s' for k, v in times.items()), flush=True)
    times = interleaved_times(steps, rounds, min_run_time, timer, progress)
    return [dict(phase=phase, mode='eager', precision='fp32', model=label, **summary)
            for label, summary in summarize(times, reference, batch_size).items()]


def measure_throughput(
        specs: Mapping[str, ModelSpec],
        reference: str,
        *,
        device: str = 'cpu',
        batch_size: Optional[int] = None,
        rounds: int = 5,
        min_run_time: float = 0.5,
        warmup: int = 2,
        clock: str = 'wall',
) -> Dict[str, Any]:
    """Time every variant's training step and inference, interleaved; JSON-ready results in bench's layout.

    ``specs`` maps variant -> model; ``reference`` (the baseline variant) is the ratio reference. The batch is the
    study's training batch size unless ``batch_size`` is given; models are freshly initialized (speed does not
    depend on the weights). ``clock='cpu'`` times this process's CPU time (robust on a shared CPU machine).
    """
    if reference not in specs:
        raise ValueError(f'reference {reference!r} is not one of the variants {list(specs)}')
    dev = check_device(device, clock, flag='device')
    batch_size = batch_size or specs[reference].batch_size
    timer = make_clock(clock)
    specs = {reference: specs[reference], **{k: v for k, v in specs.items() if k != reference}}
    results = []
    for phase in PHASES:
        results += _time_phase(specs, reference, phase, dev, batch_size, rounds, min_run_time, warmup, timer)
    return {
        'reference': reference, 'device': device, 'device_name': device_name(dev), 'batch_size': batch_size,
        'input_size': list(specs[reference].input_size), 'rounds': rounds, 'min_run_time': min_run_time,
        'clock': clock, 'torch': torch.__version__, 'timm': timm.__version__, 'num_threads': torch.get_num_threads(),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'models': {k: v.model for k, v in specs.items()}, 'results': results,
    }


def write_cost_json(report: Mapping[str, Any], path: os.PathLike) -> None:
    """``measure_throughput``'s report as JSON in ``path`` (bench's layout), atomically."""
    write_json(path, report, indent=1)


def read_throughput(report: Mapping[str, Any], models: Mapping[str, str],
                    baseline: str) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{variant: {phase: {'img_per_s', 'ratio', 'ratio_min', 'ratio_max'}}} from a cost or bench JSON.

    Only eager fp32 rows count. A row belongs to a variant when its ``model`` label is the variant's name or its
    model's name (``models``: variant -> model). Ratios are to the baseline: the file's own per-round ratios when
    its reference is the baseline, else the quotient of img/s (then min = max = that quotient).
    """
    ref_is_base = report.get('reference') in (baseline, models.get(baseline))
    rows: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for row in report.get('results', []):
        if 'skipped' in row or (row.get('mode'), row.get('precision')) != ('eager', 'fp32'):
            continue
        for variant, model in models.items():
            if row['model'] in (variant, model):
                rows.setdefault(variant, {})[row['phase']] = row
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for variant, phases in rows.items():
        for phase, row in phases.items():
            base = rows.get(baseline, {}).get(phase)
            if base is None:
                continue
            if ref_is_base:
                ratios = (row['ratio'], row.get('ratio_min', row['ratio']), row.get('ratio_max', row['ratio']))
            else:
                ratios = (row['img_per_s'] / base['img_per_s'],) * 3
            out.setdefault(variant, {})[phase] = dict(zip(('ratio', 'ratio_min', 'ratio_max'), ratios),
                                                      img_per_s=row['img_per_s'])
    return out
