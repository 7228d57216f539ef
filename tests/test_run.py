"""timm's train.py / validate.py through the runner on tiny real data (the shipped Fashion-MNIST subset), on CPU."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import timm
import torch

import eca_timm  # noqa: F401
from eca_timm.train.datasets import write_image_folder
from eca_timm.train.run import CpuDistributedDataParallel, _packaged_config, cpu_ddp_without_device_ids, recipe_file

ROOT = Path(__file__).resolve().parents[1]
MODEL = 'eca_resnet18_cifar'
DATA_ARGS = ['--model', MODEL, '--num-classes', '10', '--input-size', '1', '28', '28', '--mean', '0.286',
             '--std', '0.353', '--crop-pct', '1.0', '--device', 'cpu', '--workers', '0']
TRAIN_ARGS = DATA_ARGS + ['--batch-size', '10', '--opt', 'sgd', '--lr', '0.05', '--sched', 'cosine',
                          '--warmup-epochs', '0', '--smoothing', '0', '--color-jitter', '0', '--scale', '0.8', '1',
                          '--log-interval', '1', '--checkpoint-hist', '5', '--seed', '0']


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory) -> Path:
    """3 training and 2 validation images per class, as train/<class>/*.png and validation/<class>/*.png."""
    root, counts = write_image_folder(tmp_path_factory.mktemp('fmnist') / 'data', 3, 2)
    assert counts == {'train': 30, 'validation': 20}
    return root


def _env() -> dict:
    env = dict(os.environ)  # the installed eca_timm (the wheel in CI), not the checkout
    env.setdefault('OMP_NUM_THREADS', '1')
    return env


def _runner(scripts: Path, script: str, args: List[str]) -> List[str]:
    return [sys.executable, '-m', 'eca_timm.run', '--scripts-dir', str(scripts), script, *args]


def _summary(path: Path) -> List[dict]:
    """summary.csv rows (train.py repeats the header after a resume), numbers as floats."""
    with open(path) as f:
        rows = [r for r in csv.reader(f)]
    header = rows[0]
    return [{k: float(v) for k, v in zip(header, r)} for r in rows[1:] if r != header]


def _wait_for_checkpoint(proc: subprocess.Popen, path: Path, timeout: float = 240) -> None:
    """Wait until the training ``proc`` has written ``path``; fail if it ends first or takes too long."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f'train.py ended before its first checkpoint:\n{proc.stderr.read()[-3000:]}'
        assert time.monotonic() < deadline, f'no checkpoint after {timeout} s'
        time.sleep(0.1)


@pytest.mark.slow
def test_train_killed_and_resumed(timm_scripts, tiny_data, tmp_path):
    out = tmp_path / 'runs'
    args = TRAIN_ARGS + ['--data-dir', str(tiny_data), '--epochs', '3', '--output', str(out), '--experiment', 'r']
    run_dir = out / 'r'
    proc = subprocess.Popen(_runner(timm_scripts, 'train.py', args), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(proc, run_dir / 'checkpoint-0.pth.tar')
        proc.send_signal(signal.SIGKILL)  # a crash after epoch 0's checkpoint, in epoch 1
    finally:
        proc.kill()
        proc.wait()
    assert [r['epoch'] for r in _summary(run_dir / 'summary.csv')] == [0]
    first = torch.load(run_dir / 'last.pth.tar', map_location='cpu', weights_only=False)
    assert first['epoch'] == 0 and first['arch'] == MODEL
    assert first['state_dict']['layer4.1.se.conv.weight'].shape == (1, 1, 7)  # trained ECA layers
    assert not torch.equal(first['state_dict']['conv1.weight'],
                           timm.create_model(MODEL, in_chans=1, num_classes=10).conv1.weight)

    resumed = subprocess.run(_runner(timm_scripts, 'train.py', args + ['--resume', str(run_dir / 'last.pth.tar')]),
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _summary(run_dir / 'summary.csv')
    assert [r['epoch'] for r in rows] == [0, 1, 2]  # continued at epoch 1, not from scratch
    last = torch.load(run_dir / 'last.pth.tar', map_location='cpu', weights_only=False)
    assert last['epoch'] == 2
    assert 'optimizer' in last and last['optimizer']['state']  # optimizer state carried on

    # validate.py through the runner on model_best reproduces that epoch's eval top-1 in summary.csv (model_best
    # is the best since the resume: train.py's checkpoint saver starts afresh when resuming)
    best = torch.load(run_dir / 'model_best.pth.tar', map_location='cpu', weights_only=False)
    best_row = next(r for r in rows if r['epoch'] == best['epoch'])
    assert best['epoch'] >= 1 and best['metric'] == max(r['eval_top1'] for r in rows if r['epoch'] >= 1)
    results = tmp_path / 'val.json'
    val = subprocess.run(_runner(timm_scripts, 'validate.py', DATA_ARGS + [
        '--data-dir', str(tiny_data), '--split', 'validation', '--batch-size', '10',
        '--checkpoint', str(run_dir / 'model_best.pth.tar'), '--results-file', str(results),
        '--results-format', 'json']), env=_env(), capture_output=True, text=True)
    assert val.returncode == 0, val.stderr[-3000:]
    top1 = json.loads(results.read_text())['top1']
    assert top1 == pytest.approx(best_row['eval_top1'], abs=1e-3)
    assert (val.stdout + val.stderr).count(f'Model {MODEL} created') == 1  # each log line once


@pytest.mark.slow
def test_ctrl_c_ends_training_with_one_line(timm_scripts, tiny_data, tmp_path):
    """train.py catches KeyboardInterrupt and returns as if done (exit 0); the runner ends it as interrupted."""
    run_dir = tmp_path / 'runs' / 'r'
    args = TRAIN_ARGS + ['--data-dir', str(tiny_data), '--epochs', '200', '--output', str(run_dir.parent),
                         '--experiment', 'r']
    proc = subprocess.Popen(_runner(timm_scripts, 'train.py', args), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(proc, run_dir / 'last.pth.tar')
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == 'eca-timm run: interrupted' and 'Traceback' not in err
    assert torch.load(run_dir / 'last.pth.tar', map_location='cpu', weights_only=False)['epoch'] >= 0  # kept


@pytest.mark.slow
def test_torchrun_two_cpu_processes(timm_scripts, tiny_data, tmp_path):
    out = tmp_path / 'runs'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           '-m', 'eca_timm.run', '--scripts-dir', str(timm_scripts), 'train.py',
           *TRAIN_ARGS, '--batch-size', '5', '--data-dir', str(tiny_data), '--epochs', '1',
           '--output', str(out), '--experiment', 'ddp']
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'Training in distributed mode with multiple processes' in proc.stderr + proc.stdout
    assert [p.name for p in out.iterdir()] == ['ddp']  # one run folder, written by rank 0 only
    ckpt = torch.load(out / 'ddp' / 'last.pth.tar', map_location='cpu', weights_only=False)
    assert ckpt['epoch'] == 0 and ckpt['args'].world_size == 2 and ckpt['args'].distributed
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])
    model = timm.create_model(MODEL, in_chans=1, num_classes=10)
    model.load_state_dict(ckpt['state_dict'])  # strict: the full model, unwrapped from DDP

    # the saved weights (BN statistics averaged over ranks) reproduce the eval top-1 both ranks computed
    results = tmp_path / 'val.json'
    val = subprocess.run(_runner(timm_scripts, 'validate.py', DATA_ARGS + [
        '--data-dir', str(tiny_data), '--batch-size', '5', '--checkpoint', str(out / 'ddp' / 'last.pth.tar'),
        '--results-file', str(results), '--results-format', 'json']), env=_env(), capture_output=True, text=True)
    assert val.returncode == 0, val.stderr[-3000:]
    assert json.loads(results.read_text())['top1'] == pytest.approx(
        _summary(out / 'ddp' / 'summary.csv')[0]['eval_top1'], abs=1e-3)


def test_cpu_ddp_patch_is_scoped():
    original = torch.nn.parallel.DistributedDataParallel
    with cpu_ddp_without_device_ids():
        assert torch.nn.parallel.DistributedDataParallel is CpuDistributedDataParallel
    assert torch.nn.parallel.DistributedDataParallel is original
    assert issubclass(CpuDistributedDataParallel, original)


def test_image_folder_round_trips_the_subset(tiny_data):
    import numpy as np
    from PIL import Image
    from eca_timm.train.datasets import load_subset
    data = load_subset()
    assert data['x_train'].shape == (1000, 28, 28) and data['x_val'].shape == (200, 28, 28)
    assert np.bincount(data['y_train']).tolist() == [100] * 10 and np.bincount(data['y_val']).tolist() == [20] * 10
    classes = [str(c) for c in data['classes']]
    for split, (xk, yk) in {'train': ('x_train', 'y_train'), 'validation': ('x_val', 'y_val')}.items():
        files = sorted(tiny_data.glob(f'{split}/*/*.png'))
        assert len(files) == (30 if split == 'train' else 20)
        for f in files:
            i = int(f.stem)
            assert f.parent.name == classes[data[yk][i]]
            np.testing.assert_array_equal(np.asarray(Image.open(f)), data[xk][i])
    with pytest.raises(FileExistsError, match='exists already'):
        write_image_folder(tiny_data)


def test_recipes_resolve_to_the_packaged_copy_from_any_folder(tmp_path, monkeypatch):
    """``--config train_configs/...`` (the README's form) works outside a checkout: eca-timm ships the recipes."""
    monkeypatch.chdir(tmp_path)
    rel = 'imagenet/eca_resnet50_paper.yaml'
    shipped = (ROOT / 'train_configs' / rel).read_text()
    for name in (f'train_configs/{rel}', rel):
        with recipe_file(name) as path:
            assert path.is_absolute() and path.read_text() == shipped
    with recipe_file('train_configs/cifar10') as folder:
        assert sorted(p.name for p in folder.glob('*.yaml')) == sorted(
            p.name for p in (ROOT / 'train_configs' / 'cifar10').glob('*.yaml'))
    with recipe_file('imagenet/no_such_recipe.yaml') as path:  # unknown: left as given, train.py reports it
        assert path == Path('imagenet/no_such_recipe.yaml')
    with _packaged_config(['--model', 'x', '--config', rel, '--lr', '1']) as argv:
        assert argv[:3] == ['--model', 'x', '--config'] and argv[4:] == ['--lr', '1']
        assert Path(argv[3]).read_text() == shipped
    with _packaged_config([f'--config=train_configs/{rel}']) as argv:
        assert Path(argv[0].split('=', 1)[1]).read_text() == shipped
    local = tmp_path / 'train_configs' / rel  # a file here wins over the packaged one
    local.parent.mkdir(parents=True)
    local.write_text('epochs: 1\n')
    with recipe_file(f'train_configs/{rel}') as path:
        assert path.resolve() == local.resolve()
