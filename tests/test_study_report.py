"""eca-timm plot's report on synthetic study folders whose answer is known: a clear gain, no gain, one seed.

The folders hold what train.py writes (``summary.csv``, ``args.yaml``), with the final top-1 chosen here; the
permutation p-values are recomputed independently with itertools over every split, the CI from a tabulated t.
"""
import itertools
import json
import math
import re
import sys
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

from eca_timm import cli
from eca_timm.train.cost import count_cost, measure_throughput, read_throughput, spec_from_args
from eca_timm.train.plot import plot_cost, plot_per_seed
from eca_timm.train.report import aggregate, build_report
from eca_timm.train.stats import compare, mean_ci, min_p_value, permutation_test, welch_ci

MODELS = {'none': 'resnet18_cifar', 'eca': 'eca_resnet18_cifar', 'se': 'se_resnet18_cifar'}
NONE = [60.0, 61.0, 62.0, 61.5, 60.5]  # mean 61, sample var 0.625
GAIN = [65.5, 64.0, 66.0, 64.5, 65.0]  # NONE + 4, shuffled: same variance, so Welch's df is exactly 8
NO_GAIN = [61.5, 60.0, 60.5, 62.0, 61.0]  # NONE shuffled: difference 0
T_975_DF8 = 2.306004135  # Student t 0.975 quantile, 8 degrees of freedom (tables)


def _write_study(root: Path, finals: Dict[str, Sequence[float]], epochs: int = 3) -> Path:
    """``root/<variant>/seed<k>/`` with train.py's summary.csv (final top-1 at the last epoch) and args.yaml."""
    for variant, values in finals.items():
        for seed, final in enumerate(values):
            run = root / variant / f'seed{seed}'
            run.mkdir(parents=True)
            rows = ['epoch,train_loss,eval_loss,eval_top1,eval_top5,lr']
            rows += [f'{e},{2.0 - 0.3 * e},{1.8 - 0.2 * e},{final - 5.0 * (epochs - 1 - e)},{90.0 + e},0.05'
                     for e in range(epochs)]
            (run / 'summary.csv').write_text('\n'.join(rows) + '\n')
            args = dict(model=MODELS[variant.split('_')[0]], num_classes=10, input_size=[1, 28, 28], in_chans=None,
                        img_size=None, batch_size=32, model_kwargs={}, seed=seed, epochs=epochs)
            (run / 'args.yaml').write_text(yaml.safe_dump(args))
    return root


def _exact_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided permutation p over every split, written independently of eca_timm.train.stats."""
    pooled, k = list(a) + list(b), len(a)
    observed = abs(np.mean(a) - np.mean(b))
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), k):
        g1 = [pooled[i] for i in idx]
        g2 = [pooled[i] for i in range(len(pooled)) if i not in idx]
        total += 1
        hits += abs(np.mean(g1) - np.mean(g2)) >= observed - 1e-9
    return hits / total


def _row(text: str, variant: str) -> list:
    line = next(ln for ln in text.splitlines() if ln.startswith(f'| {variant} | {MODELS[variant]} |'))
    return [c.strip() for c in line.strip('|').split('|')]


def _png(path: Path) -> np.ndarray:
    assert path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == 'PNG'
        pixels = np.asarray(im.convert('L'))
    assert pixels.std() > 10  # drawn content, not a blank canvas
    return pixels


def test_clear_gain_is_significant_with_the_exact_p(tmp_path, capsys):
    study = _write_study(tmp_path / 'gain', {'none': NONE, 'eca': GAIN, 'se': NO_GAIN})
    assert cli.main(['plot', str(study)]) == 0
    report = build_report(aggregate(study), 'gain')
    d = report.differences['eca']
    assert report.baseline == 'none' and d.diff == pytest.approx(4.0)
    assert d.p_value == pytest.approx(_exact_p(GAIN, NONE), abs=1e-12)
    assert d.p_value == pytest.approx(2 / 252)  # fully separated groups: the split and its mirror image
    assert d.significant and d.exact and d.n_splits == 252
    half = T_975_DF8 * math.sqrt(np.var(GAIN, ddof=1) / 5 + np.var(NONE, ddof=1) / 5)
    assert d.ci == pytest.approx((4.0 - half, 4.0 + half), abs=1e-6)
    assert d.ci[0] > 0  # the CI excludes 0

    text = (study / 'results.md').read_text()
    assert _row(text, 'eca')[2:8] == ['5', '65.00 ± 0.79', '+4.00', f'[{4 - half:+.2f}, {4 + half:+.2f}]',
                                      f'{2 / 252:.4f}', 'yes']
    assert '**Seeds:** 5 per variant (3 variants, 15 runs).' in text
    assert 'exchangeable' in text and 'No normality is assumed' in text and 'seeds are not paired' in text
    assert 'smallest possible p is 0.0079' in text
    assert 'Throughput was not measured' in text
    assert capsys.readouterr().out.startswith('# Attention study: gain')
    for name in ('top1', 'loss', 'per_seed', 'cost'):
        _png(study / f'{name}.png')


def test_no_gain_is_not_significant(tmp_path):
    small = [61.3, 60.4, 62.2, 61.0, 61.6]  # +0.3 on average, well inside the seed noise
    study = _write_study(tmp_path / 'flat', {'none': NONE, 'se': NO_GAIN, 'eca': small})
    assert cli.main(['plot', str(study)]) == 0
    report = build_report(aggregate(study), 'flat')
    flat, eca = report.differences['se'], report.differences['eca']
    assert flat.diff == pytest.approx(0.0, abs=1e-12) and flat.p_value == pytest.approx(1.0)
    assert eca.diff == pytest.approx(0.3) and eca.p_value == pytest.approx(_exact_p(small, NONE), abs=1e-12)
    assert eca.p_value > 0.3 and not eca.significant and not flat.significant
    assert eca.ci[0] < 0 < eca.ci[1] and flat.ci[0] < 0 < flat.ci[1]
    text = (study / 'results.md').read_text()
    assert _row(text, 'se')[4:8] == ['+0.00', f'[{flat.ci[0]:+.2f}, {flat.ci[1]:+.2f}]', '1.0000', 'no']
    assert _row(text, 'eca')[4:8][::2] == ['+0.30', f'{eca.p_value:.4f}']


def test_single_seed_says_no_test_is_possible(tmp_path):
    study = _write_study(tmp_path / 'one', {'none': [61.0], 'eca': [63.0]})
    assert cli.main(['plot', str(study)]) == 0
    d = build_report(aggregate(study), 'one').differences['eca']
    assert (d.diff, d.p_value, d.ci, d.significant) == (pytest.approx(2.0), None, None, None)
    text = (study / 'results.md').read_text()
    assert '**Seeds:** 1 per variant (2 variants, 2 runs).' in text
    assert '**No test possible for eca**: eca has 1 run, none has 1 run' in text
    assert _row(text, 'eca')[4:7] == ['+2.00', 'n/a', 'n/a: 1 seed']
    for name in ('per_seed', 'cost'):
        _png(study / f'{name}.png')


def test_three_seeds_cannot_reach_five_percent(tmp_path):
    study = _write_study(tmp_path / 'three', {'none': [60.0, 61.0, 62.0], 'eca': [70.0, 71.0, 72.0]})
    assert cli.main(['plot', str(study)]) == 0
    d = build_report(aggregate(study), 'three').differences['eca']
    assert d.p_value == pytest.approx(0.1) == _exact_p([70.0, 71.0, 72.0], [60.0, 61.0, 62.0])
    assert not d.significant and d.ci[0] > 0  # the CI excludes 0, the test cannot
    assert 'smallest possible p is 0.1000, so no difference can reach p < 0.05' in (study / 'results.md').read_text()


def test_per_seed_figure_plots_the_runs(tmp_path):
    study = _write_study(tmp_path / 'fig', {'none': NONE, 'eca': GAIN})
    report = build_report(aggregate(study), 'fig')
    fig = plot_per_seed(report)
    left, right = fig.axes
    points = [c.get_offsets()[:, 1] for c in left.collections if len(c.get_offsets()) == 5]
    assert [sorted(p) for p in points] == [sorted(GAIN), sorted(NONE)]  # variants in folder order: eca, none
    assert [t.get_text() for t in right.texts] == [f'p = {2 / 252:.3f}']
    assert right.lines[0].get_ydata()[0] == pytest.approx(4.0)
    fig = plot_cost(report)
    assert len(fig.axes) == 1 and 'not measured' in fig.axes[0].get_title()


def test_baseline_flag_and_missing_baseline(tmp_path, capsys):
    study = _write_study(tmp_path / 'nb', {'se': NO_GAIN, 'eca': GAIN})
    assert cli.main(['plot', str(study)]) == 0
    assert 'No baseline: no variant is named "none"' in (study / 'results.md').read_text()
    assert cli.main(['plot', str(study), '--baseline', 'se']) == 0
    assert _row((study / 'results.md').read_text(), 'eca')[4] == '+4.00'
    capsys.readouterr()
    assert cli.console(['plot', str(study), '--baseline', 'cbam']) == 2
    assert "--baseline 'cbam' is not a variant of this study" in capsys.readouterr().err


def test_cost_json_puts_throughput_beside_accuracy(tmp_path):
    study = _write_study(tmp_path / 'cost', {'none': NONE, 'eca': GAIN})
    rows = [dict(phase=ph, mode='eager', precision='fp32', model=m, img_per_s=ips, ratio=r, ratio_min=r - 0.01,
                 ratio_max=r + 0.01) for ph, m, ips, r in (('train', 'none', 100.0, 1.0), ('train', 'eca', 80.0, 0.8),
                                                          ('infer', 'none', 400.0, 1.0), ('infer', 'eca', 380.0, 0.95))]
    cost = dict(reference='none', device_name='test CPU', batch_size=32, rounds=5, clock='cpu', results=rows)
    (tmp_path / 'cost.json').write_text(json.dumps(cost))
    assert cli.main(['plot', str(study), '--cost-json', str(tmp_path / 'cost.json')]) == 0
    text = (study / 'results.md').read_text()
    assert _row(text, 'eca')[10:] == ['0.80×', '0.95×'] and _row(text, 'none')[10:] == ['1.00×', '1.00×']
    assert '| eca | 80.0 | 0.800 (0.790-0.810) | 380.0 | 0.950 (0.940-0.960) |' in text
    assert 'measured on test CPU' in text
    report = build_report(aggregate(study), 'cost', cost_json=cost)
    assert [ax.get_xlabel() for ax in plot_cost(report).axes][1:] == [
        'training speed vs none (×)', 'inference speed vs none (×)']

    # an eca-timm bench file: labels are model names, its reference is not the study's baseline
    bench = dict(reference='resnet18', results=[dict(r, model=MODELS[r['model']], ratio=9.0) for r in rows])
    speed = read_throughput(bench, MODELS, 'none')
    assert (speed['eca']['train']['ratio'], speed['eca']['infer']['ratio']) == pytest.approx((0.8, 0.95))


def test_model_cost_is_the_trained_network(tmp_path):
    study = _write_study(tmp_path / 'm', {'none': [61.0], 'eca': [62.0], 'se': [61.0]})
    costs = {c.variant: count_cost(spec_from_args(c.args)) for c in aggregate(study)}
    for variant, (params, gmacs) in costs.items():
        model = timm.create_model(MODELS[variant], num_classes=10, in_chans=1)
        assert params == sum(p.numel() for p in model.parameters())
    assert costs['eca'][0] - costs['none'][0] == 2 * (3 + 5 + 7 + 7)  # one k-tap conv per block, 2 blocks a stage
    assert costs['se'][0] > costs['none'][0]
    for variant in ('none', 'se'):  # MACs of every conv and linear layer, counted by hooks on a real forward
        model, macs = timm.create_model(MODELS[variant], num_classes=10, in_chans=1).eval(), []

        def hook(m, inputs, out):
            k = m.weight[0].numel()  # in_channels / groups * kernel area, or in_features
            macs.append(out[0].numel() * k if isinstance(m, torch.nn.Conv2d) else out.numel() * k)
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.register_forward_hook(hook)
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28))
        assert costs[variant][1] == pytest.approx(sum(macs) / 1e9, rel=1e-9)
    assert costs['none'][1] == pytest.approx(0.4558, abs=1e-4) and costs['se'][1] > costs['none'][1]


def test_measured_throughput_layout():
    spec = spec_from_args(dict(model='resnet18_cifar', num_classes=10, input_size=[1, 8, 8], batch_size=2))
    out = measure_throughput({'eca': spec, 'none': spec}, 'none', rounds=2, min_run_time=0.01, warmup=1,
                             clock='cpu')
    assert out['reference'] == 'none' and out['batch_size'] == 2 and out['input_size'] == [1, 8, 8]
    assert [(r['phase'], r['model']) for r in out['results']] == [
        ('train', 'none'), ('train', 'eca'), ('infer', 'none'), ('infer', 'eca')]
    for r in out['results']:
        assert len(r['times_s']) == 2 and r['img_per_s'] == pytest.approx(2 / float(np.median(r['times_s'])))
        assert r['ratio'] == (1.0 if r['model'] == 'none' else pytest.approx(float(np.median(
            [t0 / t for t0, t in zip(next(x for x in out['results'] if x['phase'] == r['phase'])['times_s'],
                                     r['times_s'])]))))


def test_ties_count_as_extreme_like_exact_arithmetic():
    """CIFAR-10 top-1 values (multiples of 0.01 near 95): ties between splits are exact in rational arithmetic but
    not in floats; scipy's own p (tolerance 100 eps of the difference) misses them, the study's p does not."""
    from scipy import stats

    def rational_p(a, b):
        pooled, k = [Fraction(str(v)) for v in a + b], len(a)
        diff = [abs(sum(g) / k - (sum(pooled) - sum(g)) / (len(pooled) - k))
                for g in itertools.combinations(pooled, k)]
        return sum(d >= diff[0] for d in diff) / len(diff)  # combinations() yields the observed split first

    a, b = [95.08, 95.17, 95.04, 95.15], [95.04, 95.11, 95.08, 95.08]
    assert rational_p(a, b) == pytest.approx(34 / 70)
    assert permutation_test(a, b)[0] == pytest.approx(34 / 70, abs=1e-12)
    scipy_p = stats.permutation_test((a, b), lambda x, y, axis: np.abs(x.mean(axis) - y.mean(axis)),
                                     vectorized=True, n_resamples=np.inf, alternative='greater').pvalue
    assert scipy_p < 0.3  # why the study counts ties itself
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = (list(np.round(rng.normal(95.1, 0.08, n), 2)) for n in rng.integers(2, 6, size=2))
        assert permutation_test(a, b)[0] == pytest.approx(rational_p(a, b), abs=1e-12), (a, b)


def test_permutation_test_unequal_groups_and_sampling():
    from scipy import stats
    a, b = [3.0, 4.0, 5.0], [0.0, 1.0, 0.5, 1.5, 2.0]
    p, n, exact = permutation_test(a, b)
    assert (n, exact) == (56, True) and p == pytest.approx(_exact_p(a, b)) == pytest.approx(1 / 56)
    assert min_p_value(3, 5) == pytest.approx(1 / 56) and min_p_value(5, 5) == pytest.approx(2 / 252)
    x = [0.3, 1.2, 0.8, 1.9, 0.1, 1.1, 1.4]
    y = [1.0, 2.2, 1.7, 2.5, 0.9, 1.8, 1.2]
    exact_p = _exact_p(x, y)
    p, n, exact = permutation_test(x, y, max_splits=100, n_resamples=2000)  # 3,432 splits: sampled instead
    assert not exact and n == 2000 and p == pytest.approx(exact_p, abs=0.02)  # binomial sd: 0.006
    assert permutation_test(x, y, max_splits=100, n_resamples=2000) == (p, n, exact)  # seeded: reproducible
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # every run alike: no spread, and no precision-loss warning from scipy
        assert welch_ci([1.0, 1.0], [1.0, 1.0]) == (0.0, 0.0) and mean_ci([61.0, 61.0]) == (61.0, 61.0)
    a, b = [1.0, 2.0, 4.0, 7.0], [0.0, 0.1, 0.3]  # unequal variances: Welch-Satterthwaite df, not n + m - 2
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    diff = np.mean(a) - np.mean(b)
    assert 3 < df < 4 and welch_ci(a, b) == pytest.approx((diff - half, diff + half))
    x = [60.0, 61.0, 62.0, 61.5, 60.5, 61.0, 60.0, 62.0, 61.0]  # 9 runs: 8 degrees of freedom
    half = T_975_DF8 * np.std(x, ddof=1) / 3
    assert mean_ci(x) == pytest.approx((np.mean(x) - half, np.mean(x) + half), abs=1e-9)
    assert mean_ci([61.0]) is None
    assert compare('a', [1.0, 2.0], 'b', [3.0]).no_test.startswith('no test possible: b has 1 run')


def test_report_without_scipy_names_the_extra(tmp_path, monkeypatch, capsys):
    study = _write_study(tmp_path / 'noscipy', {'none': NONE, 'eca': GAIN})
    monkeypatch.setitem(sys.modules, 'scipy', None)  # `import scipy` raises ImportError, as without the package
    monkeypatch.setitem(sys.modules, 'scipy.stats', None)
    assert cli.console(['plot', str(study), '--measure-cost', '--cost-rounds', '1']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "scipy: pip install 'eca-timm[plot]'" in err, err
    assert not [p.name for p in study.iterdir() if p.is_file()]  # failed before timing: no cost.json, no report
