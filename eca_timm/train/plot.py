"""``eca-timm plot``: the study's figures and results.md.

``top1.png`` and ``loss.png`` are the mean ± std curves over seeds; ``per_seed.png`` shows every run's final top-1
per variant (points, mean, 95% CI of the mean) beside each variant's difference from the baseline (95% CI and
permutation p); ``cost.png`` puts accuracy against cost, one point per variant: GMACs, and measured training and
inference speed when there is a measurement. matplotlib and scipy are only needed here
(``pip install 'eca-timm[plot]'``).
"""
import argparse
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .._io import atomic_write, read_json
from .._measure import CLOCKS, check_device
from .cost import measure_throughput, spec_from_args, write_cost_json
from .report import StudyReport, VariantCurves, aggregate, build_report, choose_baseline, results_markdown
from .stats import mean_ci, require_scipy

__all__ = ['plot_curves', 'plot_per_seed', 'plot_cost', 'write_plots', 'register']

FIGURES = ('top1', 'loss', 'per_seed', 'cost')


def _pyplot() -> Any:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("eca-timm plot needs matplotlib: pip install 'eca-timm[plot]'") from e
    return plt


def plot_curves(curves: Sequence[VariantCurves], columns: Sequence[str], title: str) -> Any:
    """A matplotlib Figure with one panel per column: each variant's mean line and a mean ± std band."""
    plt = _pyplot()
    labels = {'eval_top1': 'eval top-1 (%)', 'eval_loss': 'eval loss', 'train_loss': 'train loss'}
    fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 4.5), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for c in curves:
            x = c.epochs + 1  # epochs counted from 1 on the axis
            line, = ax.plot(x, c.mean[col], label=f'{c.variant} (n={len(c.runs)})')
            ax.fill_between(x, c.mean[col] - c.std[col], c.mean[col] + c.std[col], color=line.get_color(),
                            alpha=0.2, linewidth=0)
        ax.set_xlabel('epoch')
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(labels.get(col, col))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _colors(report: StudyReport) -> Dict[str, str]:
    """One color per variant, the same as in the curves (matplotlib's cycle in the study's variant order)."""
    return {c.variant: f'C{i}' for i, c in enumerate(report.curves)}


def _label(report: StudyReport, variant: str) -> str:
    return f'{variant}\n(baseline)' if variant == report.baseline else variant


def plot_per_seed(report: StudyReport) -> Any:
    """Left: each run's final top-1 (one point per seed), the mean (bar) and its 95% t-interval per variant.
    Right, with a baseline: each variant's difference from it, its 95% Welch CI and permutation p."""
    plt = _pyplot()
    colors = _colors(report)
    panels = 2 if report.differences else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
    ax = axes[0][0]
    for i, c in enumerate(report.curves):
        n = len(c.final_top1)
        offsets = np.linspace(-0.15, 0.15, n) if n > 1 else np.zeros(1)
        ax.scatter(i + offsets, c.final_top1, s=22, alpha=0.8, color=colors[c.variant],
                   label='one seed' if i == 0 else None)
        mean, ci = float(c.final_top1.mean()), mean_ci(c.final_top1)
        ax.hlines(mean, i - 0.3, i + 0.3, color='black', label='mean' if i == 0 else None)
        if ci is not None:
            ax.errorbar(i + 0.32, mean, yerr=[[mean - ci[0]], [ci[1] - mean]], fmt='none', ecolor='black',
                        capsize=4, label='95% CI of the mean' if i == 0 else None)
    ax.set_xticks(range(len(report.curves)), [_label(report, c.variant) for c in report.curves])
    ax.set_ylabel('final eval top-1 (%)')
    ax.set_title(f'final top-1 per seed (seeds: {", ".join(str(len(c.runs)) for c in report.curves)})')
    ax.grid(alpha=0.3, axis='y')
    ax.legend(fontsize=8)
    if report.differences:
        ax = axes[0][1]
        diffs = list(report.differences.values())
        for i, d in enumerate(diffs):
            yerr = [[d.diff - d.ci[0]], [d.ci[1] - d.diff]] if d.ci is not None else None
            ax.errorbar(i, d.diff, yerr=yerr, fmt='o', capsize=5, color=colors[d.variant])
            label = f'p = {d.p_value:.3f}' if d.p_value is not None else 'no test (1 seed)'
            ax.annotate(label, (i, d.ci[1] if d.ci else d.diff), textcoords='offset points', xytext=(0, 6),
                        ha='center', fontsize=8)
        ax.axhline(0.0, color='gray', linestyle='--', linewidth=1)
        ax.set_xticks(range(len(diffs)), [d.variant for d in diffs])
        ax.set_xlim(-0.6, len(diffs) - 0.4)
        ax.margins(y=0.15)
        ax.set_ylabel(f'Δ final top-1 vs {report.baseline} (points)')
        ax.set_title('difference from the baseline: 95% Welch CI, permutation p')
        ax.grid(alpha=0.3, axis='y')
    fig.suptitle(f'{report.name}: final top-1 across seeds')
    fig.tight_layout()
    return fig


def plot_cost(report: StudyReport) -> Any:
    """Mean final top-1 (95% CI of the mean) against cost, one point per variant: extra GMACs over the baseline
    (absolute GMACs without one), and training and inference speed relative to it when measured."""
    plt = _pyplot()
    colors = _colors(report)
    base_gmacs = report.costs[report.baseline].gmacs if report.baseline else None
    axes_spec = [('gmacs', f'GMACs vs {report.baseline} (% more)' if base_gmacs else 'GMACs per image')]
    if any(c.throughput for c in report.costs.values()):
        axes_spec += [('train', f'training speed vs {report.baseline} (×)'),
                      ('infer', f'inference speed vs {report.baseline} (×)')]
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(5.5 * len(axes_spec), 4.5), squeeze=False)
    for ax, (key, xlabel) in zip(axes[0], axes_spec):
        for c in report.curves:
            cost = report.costs[c.variant]
            if key == 'gmacs':
                x = cost.gmacs if not base_gmacs or cost.gmacs is None else 100 * (cost.gmacs / base_gmacs - 1)
            else:
                x = cost.throughput.get(key, {}).get('ratio')
            if x is None:
                continue
            mean, ci = float(c.final_top1.mean()), mean_ci(c.final_top1)
            yerr = [[mean - ci[0]], [ci[1] - mean]] if ci else None
            ax.errorbar(x, mean, yerr=yerr, fmt='o', capsize=4, color=colors[c.variant], label=c.variant)
        ax.ticklabel_format(axis='x', useOffset=False)
        ax.margins(x=0.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel('final eval top-1 (%): mean, 95% CI')
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if len(axes_spec) == 1:
        axes[0][0].set_title('throughput not measured (eca-timm plot --measure-cost)', fontsize=9)
    fig.suptitle(f'{report.name}: accuracy against cost')
    fig.tight_layout()
    return fig


def _save(fig: Any, path: Path) -> None:
    with atomic_write(path) as f:
        fig.savefig(f, dpi=100, format='png')
    _pyplot().close(fig)


def write_plots(
        study_dir: os.PathLike,
        *,
        baseline: Optional[str] = None,
        measure_cost: bool = False,
        cost_json: Optional[os.PathLike] = None,
        cost_options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Path]:
    """Write top1.png, loss.png, per_seed.png, cost.png and results.md into ``study_dir``; return their paths.

    ``measure_cost`` times every variant's model on this machine (``cost.measure_throughput`` with
    ``cost_options``) and saves the measurement as ``study_dir/cost.json``; ``cost_json`` reads an earlier one
    instead. Without either, results.md says that throughput was not measured.
    """
    if measure_cost and cost_json is not None:
        raise ValueError('--measure-cost and --cost-json exclude each other')
    plt = _pyplot()
    require_scipy()  # the statistics' extra too, before any timing
    study_dir = Path(study_dir)
    curves = aggregate(study_dir)
    paths = {key: study_dir / f'{key}.png' for key in FIGURES}
    paths['table'] = study_dir / 'results.md'
    base = choose_baseline([c.variant for c in curves], baseline)  # a wrong --baseline fails before any timing
    measured = read_json(cost_json) if cost_json is not None else None
    if measured is not None and not isinstance(measured, dict):
        raise ValueError(f'{cost_json} is not a cost or bench JSON (an object with "results" rows)')
    if measure_cost:
        if base is None:
            raise ValueError('--measure-cost needs a baseline: no variant is named "none" (or "none_*"); name the '
                             'no-attention variant with --baseline')
        options = cost_options or {}
        check_device(options.get('device', 'cpu'), options.get('clock', 'wall'), flag='--cost-device')
        specs = {c.variant: spec_from_args(c.args) for c in curves}
        measured = measure_throughput(specs, base, **(cost_options or {}))
        paths['cost_json'] = study_dir / 'cost.json'
        write_cost_json(measured, paths['cost_json'])
    report = build_report(curves, study_dir.name, base, measured)
    name = study_dir.name
    for key, cols, title in (('top1', ['eval_top1'], f'{name}: eval top-1, mean ± std over seeds'),
                             ('loss', ['train_loss', 'eval_loss'], f'{name}: loss, mean ± std over seeds')):
        _save(plot_curves(curves, cols, title), paths[key])
    _save(plot_per_seed(report), paths['per_seed'])
    _save(plot_cost(report), paths['cost'])
    plt.close('all')
    text = results_markdown(report, [paths[k].name for k in FIGURES])
    with atomic_write(paths['table']) as f:
        f.write(text.encode())
    return paths


def _run(args: argparse.Namespace) -> int:
    options = dict(device=args.cost_device, batch_size=args.cost_batch_size, rounds=args.cost_rounds,
                   clock=args.cost_clock)
    paths = write_plots(args.study_dir, baseline=args.baseline, measure_cost=args.measure_cost,
                        cost_json=args.cost_json, cost_options=options)
    print(paths['table'].read_text(), end='')
    print(f'wrote {", ".join(str(p) for p in paths.values())}')
    return 0


EXAMPLES = '''examples:
  eca-timm plot runs/cifar10
  eca-timm plot runs/cifar10 --measure-cost --cost-clock cpu
  eca-timm plot runs/cifar10 --cost-json runs/cifar10/cost.json
'''


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'plot', help='report of an eca-timm study: curves, per-seed top-1, each variant vs the baseline and its cost',
        description='Write STUDY_DIR/results.md and top1.png, loss.png, per_seed.png, cost.png: every variant\'s '
                    'final top-1 against the no-attention baseline (difference of means, Welch 95% CI, exact '
                    'permutation test over seeds) beside its parameters, GMACs and, when measured, throughput. '
                    'Needs matplotlib (pip install \'eca-timm[plot]\').',
        epilog=EXAMPLES)
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
    p.set_defaults(func=_run)
