"""Bad input to convert, publish and the CLI: one clear line naming the problem and the fix, and nothing the user
had is lost or left half-written (issue 12; the detection side is in test_detection*.py)."""
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import yaml

import eca_timm  # noqa: F401  (registers the models)
from eca_timm._io import atomic_dir, atomic_write
from eca_timm.cli import console, main
from eca_timm.models import CheckpointMismatchError
from test_hub import _front_matter, _train_folder


def _one_line_error(capsys, command: str) -> str:
    """The error line (the last line of stderr; a progress bar may stand before it), and no traceback."""
    err = capsys.readouterr().err.strip()
    assert 'Traceback' not in err
    line = err.replace('\r', '\n').splitlines()[-1]
    assert line.startswith(f'eca-timm {command}: error: '), err
    return line


def test_force_never_deletes_the_source(tmp_path, monkeypatch):
    """--out holding the source is refused, even with --force; --out . is refused; nothing is touched."""
    run = tmp_path / 'run'
    _train_folder(run)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(ValueError, match=r'--out .*run holds the source .*run: pass a separate folder'):
        main(['publish', str(run), '--repo-id', 'me/x', '--dry-run', '--out', str(run), '--force'])
    with pytest.raises(ValueError, match='holds the source'):
        main(['convert', str(run / 'model_best.pth.tar'), '--model', 'eca_resnet18', '--out', str(run), '--force'])
    monkeypatch.chdir(run)
    with pytest.raises(ValueError, match=r'--out \. is the working directory'):
        main(['publish', str(run), '--repo-id', 'me/x', '--dry-run', '--out', '.', '--force'])
    assert sorted(p.name for p in run.iterdir()) == before


def test_console_prints_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    text = tmp_path / 'notes.txt'
    text.write_text('not a checkpoint')
    argv = ['convert', str(text), '--model', 'eca_resnet18', '--out', str(tmp_path / 'out')]
    assert console(argv) == 2
    err = _one_line_error(capsys, 'convert')
    assert f'{text} is not a readable PyTorch checkpoint' in err
    assert not (tmp_path / 'out').exists()
    with pytest.raises(ValueError, match='is not a readable PyTorch checkpoint'):
        console(['--debug', *argv])


def test_publish_names_a_corrupt_file(tmp_path, capsys):
    run = tmp_path / 'run'
    _train_folder(run)
    (run / 'args.yaml').write_text('model: [unclosed\n')
    assert console(['publish', str(run), '--repo-id', 'me/x', '--dry-run', '--out', str(tmp_path / 'o1')]) == 2
    assert f'{run / "args.yaml"} is not valid YAML' in _one_line_error(capsys, 'publish')
    _train_folder(tmp_path / 'run2')
    (tmp_path / 'run2' / 'summary.csv').write_text('epoch,eval_top1\n0,abc\n')
    assert console(['publish', str(tmp_path / 'run2'), '--repo-id', 'me/x', '--dry-run', '--out',
                    str(tmp_path / 'o2')]) == 2
    assert 'run2/summary.csv is not a train.py summary.csv' in _one_line_error(capsys, 'publish')
    (tmp_path / 'ckpt.pth.tar').write_bytes(b'\x80\x02garbage')
    assert console(['publish', str(tmp_path / 'ckpt.pth.tar'), '--repo-id', 'me/x', '--dry-run', '--out',
                    str(tmp_path / 'o3')]) == 2
    assert 'ckpt.pth.tar is not a readable PyTorch checkpoint' in _one_line_error(capsys, 'publish')
    assert not any((tmp_path / o).exists() for o in ('o1', 'o2', 'o3'))


@pytest.mark.parametrize('repo_id', ['org/name with space', 'a/b/c', 'org/..', 'noorg'])
def test_invalid_repo_ids_are_refused_before_any_work(tmp_path, repo_id):
    with pytest.raises(ValueError, match='Repo id|repo id|ORG/NAME|repo_id'):
        main(['publish', str(tmp_path / 'missing'), '--repo-id', repo_id, '--dry-run', '--out', str(tmp_path / 'o')])
    assert not (tmp_path / 'o').exists()


def test_offline_upload_says_the_hub_cannot_be_reached(tmp_path, monkeypatch, capsys):
    import importlib
    import huggingface_hub
    try:  # the HTTP client huggingface_hub uses: httpx2 (2.x), httpx (1.x)
        httpx = importlib.import_module('httpx2')
    except ImportError:
        httpx = importlib.import_module('httpx')

    class _Offline:
        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, *args, **kwargs):
            raise httpx.ConnectError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(huggingface_hub, 'HfApi', _Offline)
    _train_folder(tmp_path / 'run')
    assert console(['publish', str(tmp_path / 'run'), '--repo-id', 'me/eca_resnet18.c10']) == 2
    err = _one_line_error(capsys, 'publish')
    assert 'the Hugging Face Hub cannot be reached (offline?)' in err and 'ConnectError' in err


def test_cards_show_file_names_not_local_paths(tmp_path):
    run = tmp_path / 'run'
    _train_folder(run)
    args = yaml.safe_load((run / 'args.yaml').read_text())
    args.update(pretrained_path='/home/me/secret/weights/start.pth', initial_checkpoint='/home/me/ckpt/init.pth')
    (run / 'args.yaml').write_text(yaml.safe_dump(args))
    out = tmp_path / 'repo'
    main(['publish', str(run), '--repo-id', 'me/eca_resnet18.c10', '--dry-run', '--out', str(out)])
    card = (out / 'README.md').read_text()
    assert '/home/me' not in card and 'start.pth' in card and 'init.pth' in card


def test_stale_temporaries_of_a_killed_write_are_cleaned_and_files_are_readable(tmp_path):
    out = tmp_path / 'repo'
    stale = tmp_path / '.repo.tmp-abc123'  # what `kill -9` during convert leaves
    stale.mkdir()
    (stale / 'model.safetensors').write_bytes(b'x' * 1000)
    (tmp_path / '.other.tmp-zzz').mkdir()  # another target's: not ours to delete
    with atomic_dir(out) as tmp:
        (tmp / 'a.txt').write_text('a')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.other.tmp-zzz', 'repo']
    with open(tmp_path / '.x.json.tmp-1.json', 'w') as f:
        f.write('half')
    with atomic_write(tmp_path / 'x.json') as f:
        f.write(b'{}')
    assert not (tmp_path / '.x.json.tmp-1.json').exists()
    mask = os.umask(0)
    os.umask(mask)
    for p in (out, out / 'a.txt', tmp_path / 'x.json'):
        assert p.stat().st_mode & 0o777 == (0o777 if p.is_dir() else 0o666) & ~mask, p


def test_model_input_checks():
    with pytest.raises(ValueError, match=r"ECA kernel size must be a positive odd int or 'adaptive', got 3\.0 "):
        timm.create_model('eca_resnet18', eca_kernel_sizes=3.0)
    resnet = timm.create_model('eca_resnet18').state_dict()
    with pytest.raises(CheckpointMismatchError, match=r'an ECA-ResNet file needs --model eca_resnet<depth>'):
        from eca_timm.models import fit_state_dict
        fit_state_dict(resnet, timm.create_model('eca_mobilenetv2'))
