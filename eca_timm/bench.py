"""The ``eca-timm bench`` command: ECA models against their baselines, interleaved, as throughput ratios.

For one plugin model (e.g. ``eca_resnet50``) it builds the comparison set (timm's plain and SE models of the same
depth, timm's own ``EcaModule`` in the same ResNet, and the plugin model with its unfused ``x * gate`` blocks),
then for every setting (phase x mode x precision) times all of them round-robin: each round times every model once
with ``torch.utils.benchmark.Timer.blocked_autorange`` in a rotated order, so load changes on a shared machine hit
all of them alike. Throughput comes from the median over rounds; ratios are the median of the per-round ratios
to the reference model. Peak memory is measured once per model and setting, outside the timed runs: on CUDA with
``torch.cuda.max_memory_allocated``, on CPU as the peak of the CPU allocator's running total recorded by
``torch.profiler`` (``profile_memory=True``) during one call.
"""
import argparse
import datetime
import json
import logging
import os
import shlex
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence

import timm
import torch
from timm.layers import EcaModule
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ._io import check_writable, write_json
from ._measure import CLOCKS, check_device, clock as make_clock, device_name, interleaved_times, make_step, summarize
from .models import RELEASED_KERNEL_SIZES, EcaResNet
from .models.eca_resnet import ECA_RESNET_ARCHS

__all__ = ['comparison_models', 'run_benchmark', 'format_table']

_logger = logging.getLogger(__name__)

PHASES = ('infer', 'train')
MODES = ('eager', 'channels_last', 'compile')
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}



def _timm_eca_resnet(name: str, **kwargs: Any) -> nn.Module:
    """timm's ResNet with timm's ``EcaModule`` (as timm builds its ecaresnet models), at our per-stage sizes.

    timm's ``block_args=dict(attn_layer='eca')`` passes channels, so EcaModule picks its adaptive sizes (5,5,5,7
    for ResNet-50); the modules are replaced per stage so both models run the released kernel sizes.
    """
    depth = name.replace('eca_', '')
    model = timm.create_model(depth, block_args=dict(attn_layer='eca'), **kwargs)
    for i, k in enumerate(RELEASED_KERNEL_SIZES[name]):
        for blk in getattr(model, f'layer{i + 1}'):
            blk.se = EcaModule(kernel_size=k)
    return model


def _unfused_eca_resnet(name: str, **kwargs: Any) -> nn.Module:
    """The plugin model on timm's own blocks: ``x = x * eca.gate(x)`` then ``x += shortcut`` (no fusion)."""
    arch = ECA_RESNET_ARCHS[name]
    timm_block = Bottleneck if issubclass(arch['block'], Bottleneck) else BasicBlock
    return EcaResNet(block=timm_block, layers=arch['layers'], eca_kernel_sizes=RELEASED_KERNEL_SIZES[name], **kwargs)


def comparison_models(name: str) -> Dict[str, Callable[[], nn.Module]]:
    """Labelled constructors of ``name`` and its baselines; the first baseline is the ratio reference."""
    if name in ECA_RESNET_ARCHS:
        depth = name.replace('eca_', '')
        return {
            depth: lambda: timm.create_model(depth),
            name: lambda: timm.create_model(name),
            f'{name} (unfused)': lambda: _unfused_eca_resnet(name),
            f'timm EcaModule {depth}': lambda: _timm_eca_resnet(name),
            f'se{depth}': lambda: timm.create_model(f'se{depth}'),
        }
    if name == 'eca_mobilenetv2':
        return {'mobilenetv2_100': lambda: timm.create_model('mobilenetv2_100'),
                name: lambda: timm.create_model(name)}
    raise ValueError(f"no benchmark comparison for {name!r}; choose one of: "
                     f"{', '.join([*ECA_RESNET_ARCHS, 'eca_mobilenetv2'])}")


def _peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated on ``device`` during one ``fn()``, above what was allocated before it."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    # Kineto (the profiler's backend) prints profiler_start/stop lines and, without a GPU, a device-count error
    # unless its log level is set before its first use; a user's own KINETO_LOG_LEVEL wins.
    os.environ.setdefault('KINETO_LOG_LEVEL', '6')
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'trace.json')
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)['traceEvents']
    mem = sorted((e for e in events if e.get('name') == '[memory]' and e['args'].get('Device Type') == 0),
                 key=lambda e: e['ts'])
    if not mem:
        return 0
    # 'Total Allocated' is a process-wide running total: count from the total before this call's first event.
    base = mem[0]['args']['Total Allocated'] - mem[0]['args']['Bytes']
    return max(e['args']['Total Allocated'] for e in mem) - base


def run_benchmark(
        model_name: str,
        phases: Sequence[str] = PHASES,
        modes: Sequence[str] = ('eager', 'channels_last'),
        precisions: Sequence[str] = ('fp32',),
        device: str = 'cpu',
        batch_size: int = 8,
        img_size: int = 224,
        rounds: int = 5,
        min_run_time: float = 1.0,
        warmup: int = 2,
        include: Optional[Sequence[str]] = None,
        clock: str = 'wall',
) -> Dict[str, Any]:
    """Time ``model_name`` against its baselines in every setting; returns the JSON-ready results."""
    dev = check_device(device, clock)
    for name, value in (('rounds', rounds), ('batch_size', batch_size), ('img_size', img_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'--{name.replace("_", "-")} must be a positive integer, got {value!r}')
    if min_run_time <= 0:
        raise ValueError(f'--min-run-time must be positive (seconds), got {min_run_time!r}')
    timer = make_clock(clock)
    constructors = comparison_models(model_name)
    if include:
        unknown = [m for m in include if m not in constructors]
        if unknown:
            raise ValueError(f'unknown comparison model(s) {unknown}; available: {list(constructors)}')
        constructors = {k: v for k, v in constructors.items() if k in include or k == next(iter(constructors))}
    reference = next(iter(constructors))
    results = []
    for phase in phases:
        for mode in modes:
            for precision in precisions:
                setting = dict(phase=phase, mode=mode, precision=precision)
                _logger.info('setting %s', setting)
                try:
                    results.extend(_bench_setting(
                        constructors, reference, phase, mode, PRECISIONS[precision], dev, batch_size, img_size,
                        rounds, min_run_time, warmup, timer, setting))
                except RuntimeError as e:  # e.g. an autocast dtype or compile backend the device lacks
                    _logger.warning('skipped %s: %s', setting, e)
                    results.append(dict(setting, skipped=str(e).splitlines()[0]))
    return {
        'model': model_name, 'reference': reference, 'device': device, 'device_name': device_name(dev),
        'batch_size': batch_size, 'img_size': img_size, 'rounds': rounds, 'min_run_time': min_run_time,
        'clock': clock,
        'torch': torch.__version__, 'timm': timm.__version__, 'num_threads': torch.get_num_threads(),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'results': results,
    }


def _bench_setting(constructors, reference, phase, mode, autocast, dev, batch_size, img_size, rounds,
                   min_run_time, warmup, timer, setting) -> List[Dict[str, Any]]:
    memory_format = torch.channels_last if mode in ('channels_last', 'compile') else torch.contiguous_format
    x = torch.randn(batch_size, 3, img_size, img_size, device=dev).to(memory_format=memory_format)
    steps = {}
    for label, make in constructors.items():
        torch.manual_seed(0)
        model = make().to(dev, memory_format=memory_format)
        if mode == 'compile':
            model = torch.compile(model)
        steps[label] = make_step(model, phase, x, autocast)
        for _ in range(warmup):  # torch.compile compiles here
            steps[label]()
        _logger.info('  warmed up %s', label)
    peaks = {label: _peak_bytes(step, dev) for label, step in steps.items()}

    def progress(r: int, times: Dict[str, List[float]]) -> None:
        _logger.info('  round %d/%d: %s', r + 1, rounds,
                     ', '.join(f'{k} {batch_size / v[-1]:.1f} img/s' for k, v in times.items()))
    times = interleaved_times(steps, rounds, min_run_time, timer, progress)
    return [dict(setting, model=label, **summary, peak_mb=peaks[label] / 2 ** 20,
                 peak_ratio=peaks[label] / peaks[reference] if peaks[reference] else None)
            for label, summary in summarize(times, reference, batch_size).items()]


def format_table(report: Dict[str, Any]) -> str:
    """A markdown table of ``run_benchmark``'s results (ratios against the reference model)."""
    ref = report['reference']
    lines = [f'| phase | mode | precision | model | img/s | vs {ref} (min-max) | peak MB | peak vs {ref} |',
             '|---|---|---|---|---:|---:|---:|---:|']
    for r in report['results']:
        if 'skipped' in r:
            lines.append(f"| {r['phase']} | {r['mode']} | {r['precision']} | skipped: {r['skipped']} | | | | |")
            continue
        peak_ratio = f"{r['peak_ratio']:.3f}" if r['peak_ratio'] is not None else '-'
        lines.append(
            f"| {r['phase']} | {r['mode']} | {r['precision']} | {r['model']} | {r['img_per_s']:.2f} | "
            f"{r['ratio']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) | {r['peak_mb']:.0f} | {peak_ratio} |")
    return '\n'.join(lines)


def _run(args: argparse.Namespace) -> int:
    if args.output:
        check_writable(args.output, '--output')  # before any timing
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_benchmark(
        args.model, args.phases, args.modes, args.precisions, args.device, args.batch_size, args.img_size,
        args.rounds, args.min_run_time, args.warmup, args.include, args.clock)
    report['command'] = ' '.join(['eca-timm', *map(shlex.quote, sys.argv[1:])])
    print(format_table(report))
    if args.output:
        write_json(args.output, report, indent=1)
        print(f'wrote {args.output}')
    if all('skipped' in r for r in report['results']):
        print('eca-timm bench: error: every setting was skipped (see the table for why)', file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'bench', help='throughput and peak memory of an ECA model against its baselines, as interleaved ratios')
    p.add_argument('--model', default='eca_resnet50', help='plugin model; baselines are picked for it')
    p.add_argument('--include', nargs='+', default=None,
                   help='only these comparison models (the reference, the first, is always kept)')
    p.add_argument('--phases', nargs='+', default=list(PHASES), choices=PHASES,
                   help='inference forward, and/or a training step (forward, loss, backward, SGD step)')
    p.add_argument('--modes', nargs='+', default=['eager', 'channels_last'], choices=MODES,
                   help='compile runs channels_last input through torch.compile')
    p.add_argument('--precisions', nargs='+', default=['fp32'], choices=list(PRECISIONS),
                   help='fp32, or bf16/fp16 autocast')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda[:N]'")
    p.add_argument('--batch-size', type=int, default=8, help='images per step')
    p.add_argument('--img-size', type=int, default=224, help='input height and width')
    p.add_argument('--rounds', type=int, default=5, help='interleaved rounds; medians are taken over them')
    p.add_argument('--min-run-time', type=float, default=1.0, help='seconds per blocked_autorange measurement')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls per model and setting')
    p.add_argument('--clock', default='wall', choices=CLOCKS,
                   help="'cpu' times process CPU time (robust on a shared CPU machine; use with --threads 1)")
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    p.add_argument('--output', default=None, help='write the results as JSON here')
    p.set_defaults(func=_run, interrupted_note='nothing written')
