"""``eca-timm bench``: a tiny run through the CLI writes the JSON and table; bad input fails clearly."""
import json
import os
import subprocess
import sys

import pytest
import torch

from eca_timm import cli
from eca_timm.bench import comparison_models, run_benchmark


def test_bench_cli_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / 'results' / 'bench.json'
    threads = torch.get_num_threads()
    try:
        assert cli.main([
            'bench', '--model', 'eca_resnet18', '--include', 'eca_resnet18', '--phases', 'infer', 'train',
            '--modes', 'eager', '--batch-size', '2', '--img-size', '32', '--rounds', '2', '--min-run-time', '0.01',
            '--warmup', '1', '--threads', '1', '--clock', 'cpu', '--output', str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())
    assert report['reference'] == 'resnet18' and report['clock'] == 'cpu' and report['num_threads'] == 1
    rows = {(r['phase'], r['model']): r for r in report['results']}
    assert set(rows) == {(p, m) for p in ('infer', 'train') for m in ('resnet18', 'eca_resnet18')}
    ref = rows[('train', 'resnet18')]
    assert ref['ratio'] == 1.0 and ref['peak_ratio'] == 1.0 and len(ref['times_s']) == 2
    assert all(r['img_per_s'] > 0 and r['peak_mb'] > 0 for r in rows.values())
    table = capsys.readouterr().out
    assert '| train | eager | fp32 | eca_resnet18 |' in table
    assert not list(out.parent.glob('*.tmp'))


def test_comparison_models_for_each_family():
    assert list(comparison_models('eca_resnet50')) == [
        'resnet50', 'eca_resnet50', 'eca_resnet50 (unfused)', 'timm EcaModule resnet50', 'seresnet50']
    assert list(comparison_models('eca_mobilenetv2')) == ['mobilenetv2_100', 'eca_mobilenetv2']
    timm_eca = comparison_models('eca_resnet18')['timm EcaModule resnet18']()
    assert [blk.se.conv.kernel_size[0] for blk in (timm_eca.layer1[0], timm_eca.layer4[0])] == [3, 7]


@pytest.mark.parametrize('name', ['eca_resnet18', 'eca_resnet50'])
def test_unfused_model_is_the_plugin_model_on_timms_own_blocks(name):
    """``x = x * gate`` in timm's BasicBlock / Bottleneck: same weights, same output as the fused plugin model."""
    import timm
    from timm.models.resnet import BasicBlock, Bottleneck
    fused = timm.create_model(name).eval()
    unfused = comparison_models(name)[f'{name} (unfused)']().eval()
    expected = BasicBlock if name == 'eca_resnet18' else Bottleneck
    assert {type(m) for m in unfused.modules() if isinstance(m, (BasicBlock, Bottleneck))} == {expected}
    unfused.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(unfused(x), fused(x))


def test_bench_rejects_bad_input():
    with pytest.raises(ValueError, match="no benchmark comparison for 'resnet50'; choose one of: eca_resnet18"):
        run_benchmark('resnet50')
    with pytest.raises(ValueError, match=r"unknown comparison model\(s\) \['seresnet99'\]"):
        run_benchmark('eca_resnet18', include=['seresnet99'])
    with pytest.raises(ValueError, match="clock='cpu' times this process's CPU work"):
        run_benchmark('eca_resnet18', device='meta', clock='cpu')


@pytest.mark.slow
def test_bench_output_is_progress_and_table_only(tmp_path):
    """No profiler or CUDA-probe lines from torch's native code between the progress lines and the table."""
    env = {k: v for k, v in os.environ.items() if k != 'KINETO_LOG_LEVEL'}
    proc = subprocess.run(
        [sys.executable, '-m', 'eca_timm.cli', 'bench', '--model', 'eca_resnet18', '--include', 'eca_resnet18',
         '--phases', 'infer', '--modes', 'eager', '--batch-size', '1', '--img-size', '32', '--rounds', '1',
         '--min-run-time', '0.01', '--warmup', '1', '--threads', '1'],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    lines = proc.stdout.splitlines()
    expected = ('setting ', '  warmed up ', '  round 1/1: ', '| ', '|---')
    assert lines and [line for line in lines if not line.startswith(expected)] == []
    assert sum(line.startswith('| infer | eager | fp32 |') for line in lines) == 2


@pytest.mark.parametrize('kwargs, match', [
    (dict(rounds=0), '--rounds must be a positive integer, got 0'),
    (dict(batch_size=0), '--batch-size must be a positive integer, got 0'),
    (dict(device='gpu'), r"--device gpu: not a device name .*use 'cpu' or 'cuda\[:N\]'"),
    (dict(device='mps'), r"--device mps: eca-timm times 'cpu' and 'cuda\[:N\]' only"),
])
def test_bench_input_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_benchmark('eca_resnet18', **kwargs)


@pytest.mark.slow
def test_gpu_check_script_is_ready(tmp_path):
    """benchmarks/gpu_check.sh (run on a lent GPU) parses, and its Python check imports this package and refuses
    to run without CUDA."""
    from pathlib import Path
    bench_dir = Path(__file__).resolve().parents[1] / 'benchmarks'
    assert subprocess.run(['bash', '-n', str(bench_dir / 'gpu_check.sh')]).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    proc = subprocess.run([sys.executable, str(bench_dir / 'gpu_check.py'), '--out', str(tmp_path / 'x.json')],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    if not torch.cuda.is_available():
        assert proc.returncode == 2 and 'needs Triton, and CUDA' in proc.stderr, proc.stderr[-2000:]
    # the orchestration, with stand-ins for nvidia-smi and python3: every step runs with a time limit, in order,
    # each JSON goes to $OUT, and one log collects the output (the device returns at most 8 files)
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'nvidia-smi').write_text('#!/bin/sh\necho fake-smi\n')
    (fake / 'python3').write_text('#!/bin/sh\nif [ "$1" = "-c" ]; then echo h100; exit 0; fi\necho "ran: $*"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    out = tmp_path / 'out'
    env = dict(os.environ, PATH=f'{fake}{os.pathsep}{os.environ["PATH"]}', OUT=str(out))
    proc = subprocess.run(['bash', str(bench_dir / 'gpu_check.sh')], cwd=bench_dir.parent, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    log = (out / 'gpu_check.log').read_text()
    ran = [line for line in log.splitlines() if line.startswith('ran: ')]
    assert [line.split('--out')[0].strip() for line in ran[:1]] == ['ran: benchmarks/gpu_check.py']
    assert [r.split('--model ')[1].split()[0] for r in ran[1:]] == ['eca_resnet50', 'eca_resnet18', 'eca_mobilenetv2',
                                                                   'eca_resnet50']
    assert all('--device cuda --batch-size 256' in r for r in ran[1:]) and '--modes compile' in ran[-1]
    assert log.count(': exit 0') == 5 and 'fake-smi' in log
    assert sorted(p.name for p in out.iterdir()) == ['gpu_check.log']  # the stand-in writes no JSON
