"""Bad input to the training commands (run, study, quickstart, plot) and to recipes everywhere: one line naming the
file and the fix, before any work; nothing the user had is lost; Ctrl-C is one line too (issue 20).

The slow cases that need a real trainer (a killed study, Ctrl-C in train.py) are in test_study.py / test_run.py.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from eca_timm._io import read_json, read_yaml_mapping
from eca_timm.cli import console, main
from eca_timm.train.datasets import write_image_folder
from eca_timm.train.preflight import _check_checkpoint
from eca_timm.train.run import LOCK_FILE, run_folder_lock
from test_reliability import _one_line_error
from test_study_report import _write_study

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ['--model', 'eca_resnet18_cifar', '--num-classes', '10', '--input-size', '1', '16', '16', '--mean', '0.3',
         '--std', '0.35', '--device', 'cpu', '--workers', '0', '--batch-size', '10', '--epochs', '1']


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp('fmnist') / 'data', 1, 1)[0]


def _bad_recipes(folder: Path) -> dict:
    """One recipe per way a YAML file can be unreadable, and what the error line must say about it."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {'invalid.yaml': b'model: eca_resnet18\nmean: [0.3,\n', 'empty.yaml': b'# nothing but a comment\n',
             'list.yaml': b'- model\n- eca_resnet18\n', 'latin1.yaml': 'model: caf\xe9\n'.encode('latin-1')}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {folder / 'invalid.yaml': 'is not valid YAML (line 3, column 1: ',
            folder / 'empty.yaml': 'is empty: expected ',
            folder / 'list.yaml': 'holds a YAML list, not a mapping',
            folder / 'latin1.yaml': 'is not UTF-8 text (byte 10: invalid continuation byte): save it as UTF-8'}


def test_yaml_and_json_readers_name_the_file_and_where(tmp_path):
    for path, says in _bad_recipes(tmp_path).items():
        with pytest.raises(ValueError) as e:
            read_yaml_mapping(path, 'a train.py recipe')
        assert str(e.value).startswith(f'{path} ') and says in str(e.value)
    (tmp_path / 'bad.json').write_text('{"results": [1, 2,]}')
    with pytest.raises(ValueError, match=r'bad.json is not valid JSON \(line 1, column 19: '):
        read_json(tmp_path / 'bad.json')
    assert read_yaml_mapping(ROOT / 'train_configs/fashion_mnist/eca_resnet18_cifar.yaml')['epochs'] == 6


def test_unreadable_recipes_are_one_line_in_every_command(tmp_path, timm_scripts, capsys):
    """run --config, study, quickstart --recipe and detect train --config share one reader: the same line."""
    bad = _bad_recipes(tmp_path / 'recipes')
    for path, says in bad.items():
        assert console(['run', '--scripts-dir', str(timm_scripts), 'train.py', '--config', str(path)]) == 2
        line = _one_line_error(capsys, 'run')
        assert line.startswith(f'eca-timm run: error: {path} ') and says in line, line
    invalid = next(iter(bad))
    study_dir = tmp_path / 'study'
    study_dir.mkdir()
    (study_dir / 'eca.yaml').write_bytes(invalid.read_bytes())
    out = tmp_path / 'out'
    for argv, command, name in (
            (['study', str(study_dir), '--seeds', '1', '--out', str(out), '--scripts-dir', str(timm_scripts)],
             'study', study_dir / 'eca.yaml'),
            (['quickstart', '--recipe', str(invalid), '--out', str(out), '--scripts-dir', str(timm_scripts)],
             'quickstart', invalid),
            (['detect', 'train', '--config', str(invalid), '--output', str(out)], 'detect train', invalid)):
        assert console(argv) == 2
        assert f'error: {name} is not valid YAML (line 3, column 1: ' in _one_line_error(capsys, command)
        assert not out.exists()


def test_recipe_values_are_checked_with_their_types(tmp_path, timm_scripts, capsys):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text(yaml.safe_dump(dict(model='eca_resnet18_cifar', epochs='ten', mean=0.3, amp='yes',
                                          input_size=[1, 16], device_modules=['eca_timm'])) + 'lr: 1e-3\n')
    assert console(['run', '--scripts-dir', str(timm_scripts), 'train.py', '--config', str(recipe)]) == 2
    line = _one_line_error(capsys, 'run')
    assert line.startswith(f'eca-timm run: error: recipe {recipe}: ')
    assert "epochs: 'ten' (--epochs takes an integer)" in line
    assert "mean: 0.3 (--mean takes a list of one or more values)" in line
    assert "amp: 'yes' (--amp takes true or false)" in line and 'input_size: [1, 16] (--input-size takes 3 ' in line
    assert 'lr:' not in line and 'device_modules' not in line  # values train.py can use pass (1e-3: YAML's str)


def test_epochs_below_one_are_refused_before_any_work(tmp_path, timm_scripts, data, capsys):
    """0 or less never means "the recipe's default", and fails before anything is written (quickstart: no OUT)."""
    assert console(['run', '--scripts-dir', str(timm_scripts), 'train.py', *TRAIN, '--epochs', '0',
                    '--data-dir', str(data), '--output', str(tmp_path / 'runs')]) == 2
    assert 'error: --epochs must be at least 1, got 0' in _one_line_error(capsys, 'run')
    configs = tmp_path / 'configs'
    configs.mkdir()
    (configs / 'eca.yaml').write_text(yaml.safe_dump(dict(model='eca_resnet18_cifar', device='cpu')))
    assert console(['study', str(configs), '--seeds', '1', '--out', str(tmp_path / 'study'), '--scripts-dir',
                    str(timm_scripts), '--epochs', '-2']) == 2
    assert 'error: --epochs must be at least 1, got -2' in _one_line_error(capsys, 'study')
    for epochs in ('0', '-1'):
        assert console(['quickstart', '--out', str(tmp_path / 'qs'), '--epochs', epochs, '--scripts-dir',
                        str(timm_scripts)]) == 2
        assert f'error: --epochs must be at least 1, got {epochs}' in _one_line_error(capsys, 'quickstart')
    assert not any((tmp_path / p).exists() for p in ('runs', 'study', 'qs'))


def test_a_run_folder_that_holds_a_run_is_refused_before_train_py_starts(tmp_path, timm_scripts, data, capsys):
    run = tmp_path / 'runs' / 'r1'
    run.mkdir(parents=True)
    earlier = {'args.yaml': b'model: x\n', 'summary.csv': b'epoch,eval_top1\n0,50.0\n', 'last.pth.tar': b'ckpt'}
    for name, content in earlier.items():
        (run / name).write_bytes(content)
    argv = ['run', '--scripts-dir', str(timm_scripts), 'train.py', *TRAIN, '--data-dir', str(data),
            '--output', str(tmp_path / 'runs'), '--experiment', 'r1']
    assert console(argv) == 2
    line = _one_line_error(capsys, 'run')
    assert f'run folder {run} already holds an earlier run (args.yaml, last.pth.tar, summary.csv): continue it ' \
           f'with --resume {run}/last.pth.tar, or start a new run with another --experiment name' in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == earlier  # nothing touched, no lock file either


@pytest.mark.slow
def test_one_trainer_per_run_folder(tmp_path, timm_scripts, data, capsys):
    """While a trainer holds the run folder's lock, a second one is refused (the OS drops the lock with the
    process, so a killed trainer never blocks a rerun)."""
    run = tmp_path / 'runs' / 'r1'
    argv = ['run', '--scripts-dir', str(timm_scripts), 'train.py', *TRAIN, '--data-dir', str(data),
            '--output', str(tmp_path / 'runs'), '--experiment', 'r1']
    with run_folder_lock(run):
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert console(argv) == 2
        assert f'run folder {run} is being written by another trainer (pid {os.getpid()}): wait for it to end' \
            in _one_line_error(capsys, 'run')
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
    killed = subprocess.run([sys.executable, '-c', 'import os, signal, sys\n'
                             'from pathlib import Path\nfrom eca_timm.train.run import run_folder_lock\n'
                             f'with run_folder_lock(Path({str(run)!r})):\n    os.kill(os.getpid(), signal.SIGKILL)'])
    assert killed.returncode == -9
    with run_folder_lock(run):  # free again
        pass


def test_checkpoints_and_the_device_are_checked_before_the_script_starts(tmp_path, timm_scripts, data, capsys,
                                                                         monkeypatch):
    notes = tmp_path / 'notes.txt'
    notes.write_text('not a checkpoint')
    validate = ['run', '--scripts-dir', str(timm_scripts), 'validate.py', '--model', 'eca_resnet18_cifar',
                '--num-classes', '10', '--in-chans', '1', '--data-dir', str(data)]
    assert console(validate + ['--checkpoint', str(notes), '--device', 'cpu']) == 2
    assert f'error: --checkpoint {notes} is not a PyTorch checkpoint (neither a torch.save file nor safetensors)' \
        in _one_line_error(capsys, 'run')
    assert console(['run', '--scripts-dir', str(timm_scripts), 'train.py', *TRAIN, '--data-dir', str(data),
                    '--resume', str(notes)]) == 2
    assert f'error: --resume {notes} is not a PyTorch checkpoint' in _one_line_error(capsys, 'run')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)  # what a CPU-only machine says
    assert console(validate + ['--checkpoint', str(notes)]) == 2
    assert "error: validate.py would run on --device cuda (timm's scripts default to cuda), but CUDA is not " \
           "available here: pass --device cpu" in _one_line_error(capsys, 'run')
    model = torch.nn.Linear(2, 2)
    for name, save in (('zip.pth.tar', lambda p: torch.save(model.state_dict(), p)),
                       ('legacy.pth.tar', lambda p: torch.save(model.state_dict(), p,
                                                               _use_new_zipfile_serialization=False)),
                       ('w.safetensors', lambda p: __import__('safetensors.torch').torch.save_file(
                           model.state_dict(), str(p)))):
        save(tmp_path / name)
        _check_checkpoint('--checkpoint', str(tmp_path / name))  # every format timm's loader reads passes


@pytest.mark.slow
def test_a_torchvision_dataset_offline_is_one_line(tmp_path, timm_scripts):
    """The CIFAR-10 recipes download their data; offline that is one line saying where to put it."""
    env = dict(os.environ, https_proxy='http://127.0.0.1:9', http_proxy='http://127.0.0.1:9', no_proxy='')
    proc = subprocess.run([sys.executable, '-m', 'eca_timm.cli', 'run', '--scripts-dir', str(timm_scripts),
                           'train.py', '--config', 'train_configs/cifar10/eca_resnet18.yaml', '--device', 'cpu',
                           '--data-dir', str(tmp_path / 'cifar')], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f'eca-timm run: error: dataset torch/cifar10: the data is not in {tmp_path / "cifar"} '
                           f'and could not be downloaded ('), line
    assert f"put torchvision's files for it in {tmp_path / 'cifar'}" in line


def test_run_without_a_script_says_what_to_run(capsys):
    assert console(['run']) == 2
    assert 'error: name the timm script to run (train.py, validate.py, benchmark.py, inference.py) and its ' \
           'arguments, e.g. eca-timm run train.py --config ' in _one_line_error(capsys, 'run')


def test_a_missing_module_names_the_extra_that_provides_it(timm_scripts, monkeypatch, capsys):
    """timm's inference.py imports pandas, which no eca-timm dependency brings: the error names the extra."""
    monkeypatch.setitem(sys.modules, 'pandas', None)  # as if pandas were not installed
    assert console(['run', '--scripts-dir', str(timm_scripts), 'inference.py', '--model', 'eca_resnet18_cifar',
                    '--device', 'cpu']) == 2
    assert _one_line_error(capsys, 'run').endswith(
        "error: timm's inference.py needs pandas, which is not installed: pip install 'eca-timm[scripts]'")
    tomllib = pytest.importorskip('tomllib')  # Python 3.11+
    extras = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['optional-dependencies']
    assert any(dep.startswith('pandas') for dep in extras['scripts'])


def test_ctrl_c_is_one_line_and_exit_status_130(tmp_path, monkeypatch, capsys):
    from eca_timm.weights import convert as convert_command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(convert_command, 'convert', interrupted)
    assert console(['convert', str(tmp_path / 'x.pth'), '--model', 'eca_resnet18', '--out', str(tmp_path / 'o')]) \
        == 130
    assert capsys.readouterr().err == 'eca-timm convert: interrupted; nothing written\n'
    from eca_timm import model_table
    monkeypatch.setattr(model_table, 'model_info', interrupted)
    assert console(['models']) == 130
    assert capsys.readouterr().err == 'eca-timm models: interrupted\n'
    with pytest.raises(KeyboardInterrupt):
        console(['--debug', 'models'])


def test_plot_names_a_summary_csv_it_cannot_read(tmp_path, capsys):
    """A header-only, text or binary summary.csv is named with what is wrong, not dropped from the report."""
    cases = {'epoch,train_loss,eval_top1\n': 'it has a header but no epoch rows',
             'hello world\n': "its first line 'hello world' has no epoch column",
             'epoch,eval_top1\n0,abc\n': "line 2: eval_top1 is 'abc', not a number"}
    for i, (text, why) in enumerate(cases.items()):
        study = _write_study(tmp_path / f's{i}', {'none': [60.0, 61.0], 'eca': [62.0, 63.0]})
        (study / 'eca' / 'seed1' / 'summary.csv').write_text(text)
        assert console(['plot', str(study)]) == 2
        assert f'error: {study}/eca/seed1/summary.csv is not a train.py summary.csv ({why}): fix or remove it' \
            in _one_line_error(capsys, 'plot')
    study = _write_study(tmp_path / 'bin', {'none': [60.0, 61.0], 'eca': [62.0, 63.0]})
    (study / 'eca' / 'seed0' / 'summary.csv').write_bytes(b'\x89PNG\r\n\x1a\n\x00\xff\xfe')
    assert console(['plot', str(study)]) == 2
    assert f'error: {study}/eca/seed0/summary.csv is not UTF-8 text' in _one_line_error(capsys, 'plot')
    assert not any(study.glob('*.png')) and not (study / 'results.md').exists()


def test_plot_cost_input_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    study = _write_study(tmp_path / 's', {'none': [60.0, 61.0], 'eca': [62.0, 63.0]})
    (tmp_path / 'bad.json').write_bytes(b'{"results": [')
    assert console(['plot', str(study), '--cost-json', str(tmp_path / 'bad.json')]) == 2
    assert f'error: {tmp_path}/bad.json is not valid JSON (line 1, column 14: ' in _one_line_error(capsys, 'plot')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert console(['plot', str(study), '--measure-cost', '--cost-device', 'cuda']) == 2
    assert 'error: --cost-device cuda: CUDA is not available here; use --cost-device cpu' in \
        _one_line_error(capsys, 'plot')
    assert not (study / 'cost.json').exists() and not (study / 'results.md').exists()


def test_plot_names_the_runs_it_leaves_out(tmp_path, capsys):
    study = _write_study(tmp_path / 's', {'none': [60.0, 61.0, 62.0], 'eca': [62.0, 63.0, 64.0]})
    for name in ('summary.csv', 'args.yaml'):
        (study / 'eca' / 'seed2' / name).unlink()  # a run that failed before its first epoch
    assert main(['plot', str(study)]) == 0
    assert '**Seeds:** eca 2, none 3 (unequal: no summary.csv in eca/seed2).' in (study / 'results.md').read_text()
