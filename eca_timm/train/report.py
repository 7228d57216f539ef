"""The attention study read back and answered: is each variant better than the baseline, and at what cost?

``aggregate`` reads a study folder (``<variant>/<run>/summary.csv`` and ``args.yaml``, as ``eca-timm study``
writes them) into per-variant curves and per-run final top-1. ``build_report`` compares every variant's final
top-1 with the baseline's (difference of means, Welch 95% CI, exact permutation test: ``stats``) and puts its
cost beside it (parameters, GMACs, measured throughput: ``cost``). ``results_markdown`` writes the answer, with
the number of seeds and what the test assumes.
"""
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .._io import read_summary, read_train_args
from .cost import count_cost, read_throughput, spec_from_args
from .stats import ALPHA, Difference, compare, min_p_value

__all__ = ['VariantCurves', 'VariantCost', 'StudyReport', 'aggregate', 'choose_baseline', 'build_report',
           'results_table', 'results_markdown']

CURVE_COLUMNS = ('eval_top1', 'eval_loss', 'train_loss')

_logger = logging.getLogger(__name__)


@dataclass
class VariantCurves:
    """Per-epoch mean and sample std over a variant's runs, each run's final and best eval top-1, and its
    train.py arguments (the first run's ``args.yaml``; empty when missing); ``missing``: its run folders without a
    summary.csv (a run that failed before its first epoch), which the numbers leave out."""
    variant: str
    runs: List[Path]
    epochs: np.ndarray
    mean: Dict[str, np.ndarray] = field(default_factory=dict)
    std: Dict[str, np.ndarray] = field(default_factory=dict)
    final_top1: Optional[np.ndarray] = None
    best_top1: Optional[np.ndarray] = None
    args: Dict[str, Any] = field(default_factory=dict)
    missing: List[Path] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.args.get('model', '?')


@dataclass
class VariantCost:
    """Parameters and GMACs of one image (None when the model could not be rebuilt) and measured throughput
    relative to the baseline: {phase: {'img_per_s', 'ratio', 'ratio_min', 'ratio_max'}} (empty: not measured)."""
    params: Optional[int] = None
    gmacs: Optional[float] = None
    throughput: Dict[str, Dict[str, float]] = field(default_factory=dict)


@dataclass
class StudyReport:
    """Everything results.md and the figures show."""
    name: str
    curves: List[VariantCurves]
    baseline: Optional[str]  # None: no comparison (``no_baseline`` says why)
    no_baseline: str = ''
    differences: Dict[str, Difference] = field(default_factory=dict)
    costs: Dict[str, VariantCost] = field(default_factory=dict)
    throughput_note: str = ''  # where the throughput comes from, or that it was not measured


def _read_args(run: Path) -> Dict[str, Any]:
    path = run / 'args.yaml'
    return read_train_args(path) if path.is_file() else {}


def aggregate(study_dir: os.PathLike) -> List[VariantCurves]:
    """Mean and sample std (ddof=1; 0 for a single run) per epoch over each variant's runs.

    Variants are the sub-folders of ``study_dir`` with ``*/summary.csv`` runs; only epochs every run of the
    variant has are used, and "final" is the last of those. A summary.csv that is not train.py's is a ValueError
    naming it (``read_summary``); runs without common epochs too.
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f'{study_dir} is not a folder: pass the --out folder of eca-timm study')
    out = []
    for vdir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
        runs = sorted(p.parent for p in vdir.glob('*/summary.csv'))
        missing = sorted(p for p in vdir.iterdir() if p.is_dir() and p not in runs)
        if missing:
            _logger.warning('%s: left out, no summary.csv (no finished epoch) in %s', vdir.name,
                            ', '.join(p.name for p in missing))
        if not runs:
            continue
        summaries = [read_summary(r / 'summary.csv') for r in runs]
        epochs = np.array(sorted(set.intersection(*(set(s) for s in summaries))))
        if not len(epochs):
            spans = ', '.join(f'{r.name}: {min(s)}-{max(s)}' for r, s in zip(runs, summaries))
            raise ValueError(f'the runs of {vdir} have no epoch in common ({spans}): plot compares runs at the '
                             f'same epochs')
        curves = VariantCurves(vdir.name, runs, epochs, args=_read_args(runs[0]), missing=missing)
        ddof = 1 if len(summaries) > 1 else 0
        for col in CURVE_COLUMNS:
            values = np.array([[s[e][col] for e in epochs] for s in summaries])
            curves.mean[col], curves.std[col] = values.mean(axis=0), values.std(axis=0, ddof=ddof)
        top1 = np.array([[s[e]['eval_top1'] for e in epochs] for s in summaries])
        curves.final_top1, curves.best_top1 = top1[:, -1], top1.max(axis=1)
        out.append(curves)
    if not out:
        raise FileNotFoundError(f'no runs in {study_dir}: expected {study_dir}/<variant>/<run>/summary.csv '
                                f'(the layout eca-timm study writes)')
    return out


def choose_baseline(variants: Sequence[str], requested: Optional[str] = None) -> Optional[str]:
    """The no-attention variant: ``requested``, else the one variant named ``none`` or ``none_*``, else None.

    Raises ValueError for a ``requested`` variant that is not in the study.
    """
    if requested is not None:
        if requested not in variants:
            raise ValueError(f'--baseline {requested!r} is not a variant of this study; variants: {list(variants)}')
        return requested
    named = [v for v in variants if v == 'none' or v.startswith(('none_', 'none-'))]
    return named[0] if len(named) == 1 else None


def _model_cost(c: VariantCurves) -> VariantCost:
    try:
        params, gmacs = count_cost(spec_from_args(c.args))
    except (KeyError, RuntimeError, TypeError, ValueError):  # no args.yaml, or a model timm cannot build here
        return VariantCost()
    return VariantCost(params, gmacs)


def build_report(curves: Sequence[VariantCurves], name: str, baseline: Optional[str] = None,
                 cost_json: Optional[Mapping[str, Any]] = None) -> StudyReport:
    """Compare every variant with the baseline and gather its cost; ``cost_json`` holds measured throughput
    (``cost.measure_throughput``'s result, or an ``eca-timm bench --output`` file with matching labels)."""
    by_name = {c.variant: c for c in curves}
    report = StudyReport(name, list(curves), choose_baseline(list(by_name), baseline))
    if report.baseline is None:
        report.no_baseline = (f'No baseline: no variant is named "none" (or "none_*"); name the no-attention one '
                              f'with --baseline (variants: {", ".join(by_name)})')
    else:
        base = by_name[report.baseline]
        report.differences = {c.variant: compare(c.variant, c.final_top1, base.variant, base.final_top1)
                              for c in curves if c.variant != base.variant}
    report.costs = {c.variant: _model_cost(c) for c in curves}
    if cost_json is not None and report.baseline is not None:
        measured = read_throughput(cost_json, {c.variant: c.model for c in curves}, report.baseline)
        for variant, phases in measured.items():
            report.costs[variant].throughput = phases
        report.throughput_note = (
            f"Throughput measured on {cost_json.get('device_name', '?')} (torch {cost_json.get('torch', '?')}, "
            f"{cost_json.get('date', '?')}): batch {cost_json.get('batch_size', '?')}, eager fp32, "
            f"{cost_json.get('clock', 'wall')} clock, median of {cost_json.get('rounds', '?')} interleaved rounds; "
            f"speed is the median per-round ratio of img/s to {report.baseline} (min-max over rounds below).")
    else:
        report.throughput_note = ('Throughput was not measured: run `eca-timm plot STUDY --measure-cost` on the '
                                  'machine of interest, or pass `--cost-json FILE` from an earlier measurement.')
    return report


def _pm(values: np.ndarray) -> str:
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f'{values.mean():.2f} ± {std:.2f}'


def results_table(curves: Sequence[VariantCurves]) -> str:
    """Markdown table: per variant, runs, epochs, final and best eval top-1 as mean ± sample std over runs."""
    lines = ['| variant | runs | epochs | final top-1 (%) | best top-1 (%) |', '|---|---:|---:|---:|---:|']
    for c in curves:
        lines.append(f'| {c.variant} | {len(c.runs)} | {len(c.epochs)} | {_pm(c.final_top1)} | {_pm(c.best_top1)} |')
    return '\n'.join(lines)


def _baseline_first(report: StudyReport) -> List[VariantCurves]:
    return sorted(report.curves, key=lambda c: c.variant != report.baseline)


def _speed(cost: VariantCost, phase: str) -> str:
    t = cost.throughput.get(phase)
    return f"{t['ratio']:.2f}×" if t else 'not measured'


def _comparison_table(report: StudyReport) -> List[str]:
    lines = [f'| variant | model | seeds | final top-1 (%) | Δ vs {report.baseline} (points) | 95% CI of Δ | '
             f'p (permutation) | p < {ALPHA:g} | params | GMACs | train speed | inference speed |',
             '|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|']
    for c in _baseline_first(report):
        d, cost = report.differences.get(c.variant), report.costs[c.variant]
        if d is None:
            stat = ['baseline', '', '', '']
        elif d.p_value is None:
            stat = [f'{d.diff:+.2f}', 'n/a', 'n/a: 1 seed', '']
        else:
            stat = [f'{d.diff:+.2f}', f'[{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]', f'{d.p_value:.4f}',
                    'yes' if d.significant else 'no']
        params = f'{cost.params:,}' if cost.params is not None else '-'
        gmacs = f'{cost.gmacs:.4f}' if cost.gmacs is not None else '-'
        lines.append(f'| {c.variant} | {c.model} | {len(c.runs)} | {_pm(c.final_top1)} | ' + ' | '.join(
            [*stat, params, gmacs, _speed(cost, 'train'), _speed(cost, 'infer')]) + ' |')
    return lines


def _seed_note(report: StudyReport) -> str:
    counts = {c.variant: len(c.runs) for c in report.curves}
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f'**Seeds:** {n} per variant ({len(counts)} variants, {n * len(counts)} runs).'
    missing = [str(p.relative_to(p.parent.parent)) for c in report.curves for p in c.missing]
    why = f'no summary.csv in {", ".join(missing)}' if missing else 'some runs are missing'
    return '**Seeds:** ' + ', '.join(f'{v} {n}' for v, n in counts.items()) + f' (unequal: {why}).'


def _test_notes(report: StudyReport) -> List[str]:
    diffs = list(report.differences.values())
    tested = [d for d in diffs if d.p_value is not None]
    notes = [
        '**Test:** exact two-sample permutation test of the difference of mean final top-1, two-sided: for each '
        'variant, all C(n + m, n) ways of splitting its n runs and the baseline\'s m runs into two groups of n and '
        'm; p is the share of splits whose |difference of means| is at least the observed one. It assumes only '
        'that, if the variant made no difference, its runs and the baseline\'s would be exchangeable: independent '
        'runs (one per seed) from one distribution of final top-1. No normality is assumed. The seeds are not '
        'paired: seed k does not give two variants the same initial weights or data order (their models draw '
        'different amounts of random numbers, so the random streams part), so runs are not matched pairs.',
        '**95% CI:** Welch\'s t-interval of the difference of means (Welch-Satterthwaite degrees of freedom); it '
        'assumes final top-1 is roughly normal across seeds, but not equal variances.',
    ]
    for n, m in sorted({(d.n, d.n_baseline) for d in tested}):
        p0 = min_p_value(n, m)
        splits = math.comb(n + m, n)
        reach = 'so no difference can reach p < 0.05' if p0 >= ALPHA else 'below 0.05, so a test can succeed'
        notes.append(f'**Resolution:** with {n} and {m} seeds there are {splits:,} splits and the smallest possible '
                     f'p is {p0:.4f}, {reach}.')
    if any(not d.exact for d in tested):
        notes.append('Where the splits were too many to enumerate, p comes from 100,000 random splits.')
    if len(tested) > 1:
        notes.append(f'p < {ALPHA:g} is per comparison, not corrected for the {len(tested)} comparisons with the '
                     f'baseline (Bonferroni would ask p < {ALPHA / len(tested):.4f}).')
    notes += [d.no_test.replace('no test possible', f'**No test possible for {d.variant}**', 1)
              for d in diffs if d.p_value is None]
    return notes


def _throughput_table(report: StudyReport) -> List[str]:
    if not any(c.throughput for c in report.costs.values()):
        return []
    lines = ['', f'| variant | train img/s | train vs {report.baseline} (min-max) | inference img/s | '
                 f'inference vs {report.baseline} (min-max) |', '|---|---:|---:|---:|---:|']
    for c in _baseline_first(report):
        cells = []
        for phase in ('train', 'infer'):
            t = report.costs[c.variant].throughput.get(phase)
            cells += ([f"{t['img_per_s']:.1f}", f"{t['ratio']:.3f} ({t['ratio_min']:.3f}-{t['ratio_max']:.3f})"]
                      if t else ['-', '-'])
        lines.append(f'| {c.variant} | ' + ' | '.join(cells) + ' |')
    return lines


def results_markdown(report: StudyReport, figures: Sequence[str] = ()) -> str:
    """results.md: the top-1 table, then each variant against the baseline with its cost, and how to read it."""
    epochs = sorted({len(c.epochs) for c in report.curves})
    lines = [f'# Attention study: {report.name}', '',
             f'Final top-1 is the eval top-1 after the last epoch all runs of a variant have '
             f'({"/".join(map(str, epochs))} epochs); mean ± sample std over seeds.', '',
             results_table(report.curves), '', '## Against the baseline: accuracy and cost', '']
    if report.baseline is None:
        lines += [report.no_baseline + '.', '']
    else:
        lines += _comparison_table(report) + [
            '', f'Δ: mean final top-1 of the variant minus that of {report.baseline}, in points. Speed: images per '
                'second relative to the baseline (0.90× = 10% slower).', '']
        lines += [f'- {note}' for note in [_seed_note(report), *_test_notes(report)]]
    shape = next((c.args.get('input_size') for c in report.curves if c.args.get('input_size')), None)
    shape = 'x'.join(map(str, shape)) if shape else "the study's input size"
    lines += [f'- **Cost:** parameters, and GMACs of one {shape} image as torch\'s FlopCounterMode counts them '
              f'(convolutions and matrix products: the attention\'s pooling, sigmoid and scaling are not counted, '
              f'which is why measured speed is the cost that matters).',
              f'- {report.throughput_note}']
    lines += _throughput_table(report)
    if figures:
        lines += ['', 'Figures: ' + ', '.join(f'`{f}`' for f in figures) + '.']
    return '\n'.join(lines) + '\n'
