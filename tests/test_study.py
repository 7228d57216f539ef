"""eca-timm study / plot on tiny real data: 2 variants x 2 seeds through train.py, then curves and table."""
import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from eca_timm import cli
from eca_timm._io import read_summary
from eca_timm.train.datasets import write_image_folder
from eca_timm.train.plot import plot_curves
from eca_timm.train.report import aggregate
from eca_timm.train.run import LOCK_FILE

VARIANTS = {'none': 'resnet18_cifar', 'eca': 'eca_resnet18_cifar'}
EPOCHS = 2


def _recipe(model: str, data: Path) -> dict:
    return dict(device_modules=['eca_timm'], model=model, num_classes=10, data_dir=str(data), input_size=[1, 16, 16],
                mean=[0.286], std=[0.353], crop_pct=1.0, device='cpu', workers=0, batch_size=10, opt='sgd', lr=0.05,
                sched='cosine', epochs=EPOCHS, warmup_epochs=0, smoothing=0.0, color_jitter=0.0, scale=[0.8, 1.0],
                checkpoint_hist=1)


@pytest.fixture(scope='module')
def study(tmp_path_factory, timm_scripts):
    tmp = tmp_path_factory.mktemp('study')
    data, _ = write_image_folder(tmp / 'data', 3, 2)
    configs = tmp / 'configs'
    configs.mkdir()
    for name, model in VARIANTS.items():
        (configs / f'{name}.yaml').write_text(yaml.safe_dump(_recipe(model, data)))
    out = tmp / 'runs'
    argv = ['study', str(configs), '--seeds', '2', '--out', str(out), '--parallel', '2',
            '--scripts-dir', str(timm_scripts), '--log-interval', '1']
    assert cli.main(argv) == 0
    return configs, out, argv


def _columns(summary: Path, col: str) -> np.ndarray:
    with open(summary, newline='') as f:
        return np.array([float(r[col]) for r in csv.DictReader(f)])


@pytest.mark.slow
def test_study_runs_every_variant_and_seed(study):
    _, out, _ = study
    assert sorted(str(p.relative_to(out)) for p in out.glob('*/*/summary.csv')) == [
        'eca/seed0/summary.csv', 'eca/seed1/summary.csv', 'none/seed0/summary.csv', 'none/seed1/summary.csv']
    args = yaml.safe_load((out / 'eca' / 'seed1' / 'args.yaml').read_text())
    assert (args['model'], args['seed'], args['log_interval']) == ('eca_resnet18_cifar', 1, 1)  # recipe, seed, extra
    assert list(read_summary(out / 'eca' / 'seed1' / 'summary.csv')) == list(range(EPOCHS))


@pytest.mark.slow
def test_restarted_study_skips_finished_runs(study, capsys):
    _, out, argv = study
    before = {p: p.stat().st_mtime_ns for p in out.glob('*/*/summary.csv')}
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert '4 runs, 4 complete already, 0 to run' in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob('*/*/summary.csv')} == before


@pytest.mark.slow
def test_plot_curves_and_table_match_the_runs(study):
    _, out, _ = study
    assert cli.main(['plot', str(out)]) == 0
    curves = {c.variant: c for c in aggregate(out)}
    assert sorted(curves) == ['eca', 'none']
    table = (out / 'results.md').read_text()
    for name, c in curves.items():
        runs = [out / name / f'seed{s}' / 'summary.csv' for s in (0, 1)]
        assert c.runs == [r.parent for r in runs]
        for col in ('eval_top1', 'eval_loss', 'train_loss'):
            values = np.stack([_columns(r, col) for r in runs])
            np.testing.assert_allclose(c.mean[col], values.mean(axis=0))
            np.testing.assert_allclose(c.std[col], values.std(axis=0, ddof=1))
        top1 = np.stack([_columns(r, 'eval_top1') for r in runs])
        final, best = top1[:, -1], top1.max(axis=1)
        row = re.search(rf'^\| {name} \| 2 \| {EPOCHS} \| (.+?) ± (.+?) \| (.+?) ± (.+?) \|$', table, re.M)
        assert row, table
        assert [float(v) for v in row.groups()] == pytest.approx(
            [final.mean(), final.std(ddof=1), best.mean(), best.std(ddof=1)], abs=0.006)

    fig = plot_curves(list(curves.values()), ['eval_top1'], 'test')
    lines = {ln.get_label().split(' ')[0]: ln for ln in fig.axes[0].lines}
    for name, c in curves.items():  # the plotted curve is the mean, at epochs 1..N
        np.testing.assert_allclose(lines[name].get_ydata(), c.mean['eval_top1'])
        np.testing.assert_allclose(lines[name].get_xdata(), np.arange(1, EPOCHS + 1))

    for png in ('top1.png', 'loss.png'):
        with Image.open(out / png) as im:
            im.verify()
        with Image.open(out / png) as im:
            pixels = np.asarray(im.convert('L'))
        assert im.format == 'PNG' and pixels.shape[0] >= 400 and pixels.shape[1] >= 600
        assert pixels.std() > 10  # drawn content, not a blank canvas


def test_plot_of_an_empty_folder_fails(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match='no runs in'):  # the commands raise; cli.console prints one line
        cli.main(['plot', str(tmp_path)])
    assert cli.console(['plot', str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f'eca-timm plot: error: no runs in {tmp_path}')


def test_study_with_bad_recipe_fails_before_training(tmp_path, timm_scripts, capsys):
    (tmp_path / 'a.yaml').write_text(yaml.safe_dump({'device_modules': ['eca_timm'], 'model': 'eca_resnet18',
                                                     'epoch': 3}))
    argv = ['study', str(tmp_path), '--seeds', '1', '--out', str(tmp_path / 'runs'), '--scripts-dir',
            str(timm_scripts)]
    with pytest.raises(ValueError, match=r"unknown train.py argument\(s\) 'epoch' \(did you mean 'epochs'\?\)"):
        cli.main(argv)
    assert cli.console(argv) == 2
    assert capsys.readouterr().err.count('error:') == 1
    assert not (tmp_path / 'runs').exists()


@pytest.mark.slow
def test_killed_study_takes_its_trainer_along(tmp_path, timm_scripts):
    """SIGKILL of the study: its train.py child dies too (a rerun never finds two trainers on one run folder)."""
    data, _ = write_image_folder(tmp_path / 'data', 1, 1)
    configs = tmp_path / 'configs'
    configs.mkdir()
    (configs / 'eca.yaml').write_text(yaml.safe_dump(dict(_recipe('eca_resnet18_cifar', data), epochs=1000)))
    out = tmp_path / 'runs'
    study = subprocess.Popen([sys.executable, '-m', 'eca_timm.cli', 'study', str(configs), '--seeds', '1', '--out',
                              str(out), '--scripts-dir', str(timm_scripts)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    lock = out / 'eca' / 'seed0' / LOCK_FILE
    try:
        deadline = time.monotonic() + 240
        while not (lock.is_file() and lock.read_text().strip() not in ('', str(study.pid))):
            assert study.poll() is None and time.monotonic() < deadline, 'the study started no trainer'
            time.sleep(0.2)
        trainer = int(lock.read_text())
        os.kill(trainer, 0)  # running
    finally:
        study.send_signal(signal.SIGKILL)
        study.wait()
    deadline = time.monotonic() + 30
    while Path(f'/proc/{trainer}').exists() and Path(f'/proc/{trainer}/stat').read_text().split()[2] != 'Z':
        assert time.monotonic() < deadline, f'trainer {trainer} outlived the killed study'
        time.sleep(0.1)


def test_unfinished_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    from eca_timm.train import study as study_mod
    calls = []
    monkeypatch.setattr(subprocess, 'run', lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    with_ckpt = study_mod.StudyRun('eca', 0, tmp_path / 'r.yaml', tmp_path / 'eca' / 'seed0', ['--seed', '0'], 3)
    with_ckpt.run_dir.mkdir(parents=True)
    (with_ckpt.run_dir / 'last.pth.tar').write_bytes(b'')
    (with_ckpt.run_dir / 'summary.csv').write_text('epoch,eval_top1\n0,10.0\n')
    no_ckpt = study_mod.StudyRun('eca', 1, tmp_path / 'r.yaml', tmp_path / 'eca' / 'seed1', ['--seed', '1'], 3)
    no_ckpt.run_dir.mkdir(parents=True)
    (no_ckpt.run_dir / 'summary.csv').write_text('epoch,eval_top1\n0,10.0\n')
    (no_ckpt.run_dir / 'args.yaml').write_text('seed: 1\n')
    (no_ckpt.run_dir / 'train.log').write_text('the earlier attempt\n')
    study_mod.run_study([with_ckpt, no_ckpt], parallel=1)
    assert calls[0][-2:] == ['--resume', str(with_ckpt.run_dir / 'last.pth.tar')]
    assert (with_ckpt.run_dir / 'summary.csv').exists()  # its rows continue after the resume
    assert not (no_ckpt.run_dir / 'args.yaml').exists()  # the runner would refuse a folder holding a run
    assert (no_ckpt.run_dir / 'train.log').read_text().startswith('the earlier attempt')  # the log goes on
    assert '--resume' not in calls[1] and not (no_ckpt.run_dir / 'summary.csv').exists()  # starts afresh


def test_read_summary_after_resume(tmp_path):
    path = tmp_path / 'summary.csv'
    path.write_text('epoch,train_loss,eval_top1\n0,2.0,10.0\n1,1.5,20.0\n'
                    'epoch,train_loss,eval_top1\n1,1.4,25.0\n2,1.0,30.0\n')  # killed in epoch 1 after its row
    assert read_summary(path) == {0: {'epoch': 0.0, 'train_loss': 2.0, 'eval_top1': 10.0},
                                  1: {'epoch': 1.0, 'train_loss': 1.4, 'eval_top1': 25.0},
                                  2: {'epoch': 2.0, 'train_loss': 1.0, 'eval_top1': 30.0}}


def _fake_training(study_mod, monkeypatch, tops):
    """subprocess.run stand-in: appends summary.csv rows one epoch at a time like train.py, and after each row
    waits until the study has printed that epoch's progress line (so a line that only comes at the end fails)."""
    said = []
    monkeypatch.setattr(study_mod, '_say', said.append)

    def fake_run(cmd, **kw):
        run_dir = Path(cmd[cmd.index('--output') + 1]) / cmd[cmd.index('--experiment') + 1]
        summary = run_dir / 'summary.csv'
        start = len(read_summary(summary)) if summary.exists() else 0
        for epoch, top1 in enumerate(tops[run_dir.name][start:], start):
            with open(summary, 'a') as f:
                if epoch == start:
                    f.write('epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n')
                f.write(f'{epoch},1.0,0.9,{top1},90.0,')  # a row caught half written must not break the poll
                f.flush()
                time.sleep(0.05)
                f.write('0.05\n')
            deadline = time.monotonic() + 20
            while not any(f'{run_dir.name}: epoch {epoch + 1}/' in s for s in said):
                assert time.monotonic() < deadline, f'no progress line for epoch {epoch + 1} while running: {said}'
                time.sleep(0.01)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, 'run', fake_run)
    return said


def _run(tmp_path, variant, seed, epochs):
    run_dir = tmp_path / variant / f'seed{seed}'
    from eca_timm.train.study import StudyRun
    return StudyRun(variant, seed, tmp_path / 'r.yaml', run_dir,
                    ['--seed', str(seed), '--output', str(run_dir.parent), '--experiment', run_dir.name], epochs)


def test_study_prints_each_epoch_while_runs_train(tmp_path, monkeypatch):
    from eca_timm.train import study as study_mod
    tops = {'seed0': [10.0, 30.5, 20.0], 'seed1': [40.0, 35.0, 61.5]}
    said = _fake_training(study_mod, monkeypatch, tops)
    runs = [_run(tmp_path, 'eca_resnet18', 0, 3), _run(tmp_path, 'eca_resnet18', 1, 3)]
    assert study_mod.run_study(runs, parallel=2, poll_s=0.01) == 0
    for i, seed, lines in ((1, 0, ['epoch 1/3, top-1 10.0 (best 10.0)', 'epoch 2/3, top-1 30.5 (best 30.5)',
                                   'epoch 3/3, top-1 20.0 (best 30.5)', 'done, final top-1 20.00']),
                           (2, 1, ['epoch 1/3, top-1 40.0 (best 40.0)', 'epoch 2/3, top-1 35.0 (best 40.0)',
                                   'epoch 3/3, top-1 61.5 (best 61.5)', 'done, final top-1 61.50'])):
        prefix = f'[{i}/2] eca_resnet18/seed{seed}: '
        own = [s[len(prefix):] for s in said if s.startswith(prefix)]
        assert own[0].startswith('started (') and own[1:] == lines  # each epoch once, in order, then done


def test_resumed_run_reports_only_new_epochs(tmp_path, monkeypatch):
    from eca_timm.train import study as study_mod
    said = _fake_training(study_mod, monkeypatch, {'seed0': [50.0, 45.0, 47.0]})
    run = _run(tmp_path, 'se', 0, 3)
    run.run_dir.mkdir(parents=True)
    (run.run_dir / 'last.pth.tar').write_bytes(b'')
    (run.run_dir / 'summary.csv').write_text('epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n'
                                             '0,1.0,0.9,50.0,90.0,0.05\n')
    assert study_mod.run_study([run], poll_s=0.01) == 0
    assert [s for s in said if ': epoch' in s] == ['[1/1] se/seed0: epoch 2/3, top-1 45.0 (best 50.0)',
                                                  '[1/1] se/seed0: epoch 3/3, top-1 47.0 (best 50.0)']
