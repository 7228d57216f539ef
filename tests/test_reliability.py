"""Bad input to convert, publish, release and the CLI: one clear line naming the problem and the fix, and nothing the
user had is lost or left half-written (issues 12 and 20; the detection side is in test_detection*.py)."""
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
from fake_hub import fake_hub  # noqa: F401  (a fixture)
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
    for content, says in ((b'model: caf\xe9\n', 'is not UTF-8 text (byte 10: '), (b'', "is empty: expected train.py's "
                          "args.yaml"), (b'- eca_resnet18\n',
                          "is not train.py's args.yaml (its arguments): it holds a YAML list")):
        (run / 'args.yaml').write_bytes(content)  # the reader of every train.py args.yaml (plot, quickstart too)
        assert console(['publish', str(run), '--repo-id', 'me/x', '--dry-run', '--out', str(tmp_path / 'o1')]) == 2
        assert f'{run / "args.yaml"} {says}' in _one_line_error(capsys, 'publish')
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


@pytest.fixture
def unreachable_hub():
    """huggingface_hub's HTTP client cannot reach the Hub (what it sees offline)."""
    import httpx2
    from fake_hub import serve
    from huggingface_hub.utils import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    def unreachable(request):
        raise httpx2.ConnectError('[Errno -3] Temporary failure in name resolution', request=request)
    serve(unreachable)
    yield
    set_client_factory(default_client_factory)


def test_offline_upload_says_the_hub_cannot_be_reached(tmp_path, unreachable_hub, capsys):
    """Issue 20.28: without --out nothing is kept, and the line says so (no deleted temporary folder named)."""
    _train_folder(tmp_path / 'run')
    assert console(['publish', str(tmp_path / 'run'), '--repo-id', 'me/eca_resnet18.c10']) == 2
    err = _one_line_error(capsys, 'publish')
    assert 'the Hugging Face Hub cannot be reached (offline?) to upload to me/eca_resnet18.c10' in err
    assert 'ConnectError' in err and 'nothing was kept (pass --out DIR to keep the folder' in err
    assert '/tmp' not in err.split('ConnectError')[0]
    out = tmp_path / 'kept'
    assert console(['publish', str(tmp_path / 'run'), '--repo-id', 'me/eca_resnet18.c10', '--out', str(out)]) == 2
    assert f'upload the folder kept in {out} with `eca-timm publish {out} --repo-id me/eca_resnet18.c10`' in \
        _one_line_error(capsys, 'publish')
    assert (out / 'model.safetensors').is_file()


def test_release_offline_names_the_rerun(tmp_path, unreachable_hub, capsys, monkeypatch):
    """Issue 20.26: offline, release's advice is its own rerun (release has no --dry-run)."""
    from official_eca import official_resnet, randomize_, save_official
    release_dir = tmp_path / 'release'
    release_dir.mkdir()
    save_official(randomize_(official_resnet(18, (3, 5, 7, 7))), release_dir / 'eca_resnet18_k3577.pth.tar')
    assert console(['release', str(release_dir), '--out', str(tmp_path / 'hub'), '--push']) == 2
    err = _one_line_error(capsys, 'release')
    assert f'rerun `eca-timm release {release_dir} --out {tmp_path / "hub"} --push`' in err and '--dry-run' not in err
    assert (tmp_path / 'hub' / 'eca_resnet18.official_in1k' / 'model.safetensors').is_file()


def test_a_refused_token_says_where_it_came_from(tmp_path, fake_hub, monkeypatch, capsys):
    """Issue 20.33: the Hub's 401 for a bad HF_TOKEN (through huggingface_hub) names the variable, never the token."""
    from huggingface_hub import constants
    _train_folder(tmp_path / 'run')
    argv = ['publish', str(tmp_path / 'run'), '--repo-id', 'me/eca_resnet18.c10']
    monkeypatch.setenv('HF_TOKEN', 'hf_not_a_real_token_123')
    assert console(argv) == 2
    err = _one_line_error(capsys, 'publish')
    assert 'the Hugging Face Hub refused the token from the HF_TOKEN environment variable (401 Unauthorized: ' \
           'Invalid credentials in Authorization header)' in err and '`hf auth login`' in err
    assert 'hf_not_a_real_token_123' not in err
    monkeypatch.delenv('HF_TOKEN')
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-token'))
    assert console(argv) == 2
    assert 'the Hugging Face Hub needs a token to upload to me/eca_resnet18.c10 (401' in \
        _one_line_error(capsys, 'publish')
    assert fake_hub.commits == []


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


def _official18(path: Path) -> Path:
    from official_eca import official_resnet, randomize_, save_official
    save_official(randomize_(official_resnet(18, (3, 5, 7, 7))), path)
    return path


def test_unwritable_targets_are_refused_before_any_work(tmp_path, monkeypatch):
    """Issue 20.30: convert --out, bench --output and detect eval --metrics-file name the user's path at once."""
    from test_io import _read_only_dir
    from eca_timm import bench
    (tmp_path / 'afile.txt').write_text('x')
    missing = str(tmp_path / 'missing.pth.tar')  # a later check would name it: the target is checked first
    with pytest.raises(NotADirectoryError, match=r'--out .*afile\.txt/sub: .*afile\.txt is a file, not a folder'):
        main(['convert', missing, '--model', 'eca_resnet18', '--out', str(tmp_path / 'afile.txt' / 'sub')])
    undo = _read_only_dir(tmp_path / 'ro')
    try:
        with pytest.raises(PermissionError, match=r'--out .*ro/hub: cannot write in .*ro \('):
            main(['convert', missing, '--model', 'eca_resnet18', '--out', str(tmp_path / 'ro' / 'hub')])
        monkeypatch.setattr(bench, 'run_benchmark', lambda *a, **k: pytest.fail('timed before checking --output'))
        with pytest.raises(PermissionError, match=r'--output .*ro/r\.json: cannot write in'):
            main(['bench', '--output', str(tmp_path / 'ro' / 'r.json')])
        with pytest.raises(PermissionError, match=r'--metrics-file .*ro/m\.json: cannot write in'):
            main(['detect', 'eval', '--checkpoint', missing, '--metrics-file', str(tmp_path / 'ro' / 'm.json'),
                  '--device', 'cpu'])
    finally:
        undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['afile.txt', 'ro'] and not any((tmp_path / 'ro').iterdir())


def test_convert_force_over_a_publish_folder_keeps_no_file_of_the_earlier_write(tmp_path):
    """Issue 20.7: an earlier publish's train_hparams.yaml (another model's) goes; the user's own files stay."""
    _train_folder(tmp_path / 'run')
    out = tmp_path / 'out'
    main(['publish', str(tmp_path / 'run'), '--repo-id', 'me/eca_resnet18.c10', '--dry-run', '--out', str(out)])
    (out / 'notes.txt').write_text('mine')
    main(['convert', str(_official18(tmp_path / 'eca_resnet18_k3577.pth.tar')), '--model', 'eca_resnet18', '--out',
          str(out), '--force'])
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors', 'notes.txt']
    assert 'train.py arguments' not in (out / 'README.md').read_text()


@pytest.mark.parametrize('argv, error, message', [
    (['convert', 'SRC', '--model', 'eca_resnet18', '--out', 'OUT', '--tag', 'my tag/../x'], ValueError,
     r"--tag 'my tag/\.\./x' cannot name a Hub repo \(eca-timm/eca_resnet18\.my tag/\.\./x: .*use letters"),
    (['convert', 'SRC', '--model', 'eca_resnet_nope', '--out', 'OUT'], ValueError,
     r"--model 'eca_resnet_nope' is not a registered ECA model \(did you mean 'eca_resnet\w+'.*`eca-timm models` lists them"),
    (['publish', 'SRC', '--repo-id', 'me/x', '--model', 'eca_resnet_nope', '--dry-run', '--out', 'OUT'], ValueError,
     r"--model 'eca_resnet_nope' is not a registered ECA model \(did you mean "),
    (['publish', 'SRC', '--repo-id', 'me/x', '--dataset', 'evil: 1\n- injected', '--dry-run', '--out', 'OUT'],
     ValueError, r"--dataset 'evil: 1\\n- injected' is not a Hub dataset id \(NAME or ORG/NAME"),
    (['publish', 'SRC', '--repo-id', 'me/x', '--license', 'mit\nfoo: bar', '--dry-run', '--out', 'OUT'], ValueError,
     r"--license 'mit\\nfoo: bar' is not a license identifier the Hub knows.*or pass other"),
])
def test_names_and_card_fields_are_checked_before_any_work(tmp_path, argv, error, message):
    """Issues 20.8, 20.9, 20.16, 20.27: tags, model names, dataset ids and licenses, before the source is read."""
    src = _official18(tmp_path / 'eca_resnet18_k3577.pth.tar')
    argv = [str(src) if a == 'SRC' else str(tmp_path / 'out') if a == 'OUT' else a for a in argv]
    with pytest.raises(error, match=message):
        main(argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_a_checkpoint_of_another_model_or_head_says_what_it_is(tmp_path):
    """Issues 20.15, 20.25: a 10-class head, an ECA-MobileNetV2 file as eca_resnet18."""
    from official_eca import OfficialEcaMobileNetV2, randomize_, save_official
    ten = tmp_path / 'r18_10.pth'
    torch.save(timm.create_model('eca_resnet18', num_classes=10).state_dict(), ten)
    with pytest.raises(CheckpointMismatchError, match=r"r18_10\.pth: the checkpoint's fc has 10 classes, the "
                                                      r"eca_resnet18 built here 1000 .*publish a fine-tuned checkpoint "
                                                      r"with `eca-timm publish .*r18_10\.pth --model eca_resnet18"):
        main(['convert', str(ten), '--model', 'eca_resnet18', '--out', str(tmp_path / 'out')])
    mbv2 = tmp_path / 'eca_mobilenetv2_k13.pth.tar'
    save_official(randomize_(OfficialEcaMobileNetV2()), mbv2, arch='eca_mobilenet_v2')
    with pytest.raises(CheckpointMismatchError, match=r"eca_mobilenetv2_k13\.pth\.tar is a checkpoint of "
                                                      r"eca_mobilenetv2, not of eca_resnet18: .*pass --model "
                                                      r"eca_mobilenetv2"):
        main(['convert', str(mbv2), '--model', 'eca_resnet18', '--out', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_one_channel_checkpoint_publishes_without_args_yaml(tmp_path):
    """Issue 20.19: classes and input channels come from the weights; args.yaml that disagrees is named."""
    run = _train_folder(tmp_path / 'run', name='eca_resnet18_cifar', in_chans=1)
    out = tmp_path / 'repo'
    main(['publish', str(tmp_path / 'run' / 'model_best.pth.tar'), '--repo-id', 'me/x', '--dry-run', '--out', str(out)])
    reloaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert reloaded.num_classes == 10 and torch.equal(reloaded(x), run['ema'](x))
    args = yaml.safe_load((tmp_path / 'run' / 'args.yaml').read_text())
    (tmp_path / 'run' / 'args.yaml').write_text(yaml.safe_dump(dict(args, input_size=[3, 28, 28])))
    with pytest.raises(CheckpointMismatchError, match=r"model_best\.pth\.tar: the checkpoint's conv1 has 1 input "
                                                      r"channels, the eca_resnet18_cifar built here 3 .*fix args\.yaml"):
        main(['publish', str(tmp_path / 'run'), '--repo-id', 'me/x', '--dry-run', '--out', str(tmp_path / 'o2')])
    assert not (tmp_path / 'o2').exists()


@pytest.mark.parametrize('content, message', [
    (b'{"architecture": ', r'config\.json is not valid JSON \(line 1, column 18: Expecting value\); fix or replace'),
    ('{}'.encode('utf-16'), r'config\.json is not UTF-8 text'),
    (b'{"architecture": "eca_resnet18"}', r'config\.json is not a timm config\.json \(no pretrained_cfg\)'),
    (b'{"architecture": "resnet_nope", "pretrained_cfg": {}}',
     r"config\.json: architecture 'resnet_nope' is not a registered ECA model"),
])
def test_publish_names_a_folders_bad_config_json(tmp_path, capsys, content, message):
    """Issue 20.29: a corrupt config.json in a converted (local-dir:) folder, the path first."""
    folder = tmp_path / 'converted'
    folder.mkdir()
    (folder / 'config.json').write_bytes(content)
    assert console(['publish', str(folder), '--repo-id', 'me/x', '--dry-run', '--out', str(tmp_path / 'o')]) == 2
    line = _one_line_error(capsys, 'publish')
    assert line.startswith(f'eca-timm publish: error: {folder / "config.json"}')
    assert __import__('re').search(message, line), line
    assert not (tmp_path / 'o').exists()


def test_interrupted_convert_and_publish_leave_nothing_behind(tmp_path, monkeypatch):
    """Issue 20.17: Ctrl-C while the folder is written: no --out, no temporary; an existing --out as it was."""
    import safetensors.torch
    src = _official18(tmp_path / 'eca_resnet18_k3577.pth.tar')
    real_save = safetensors.torch.save_file

    def interrupted(tensors, filename, *args, **kwargs):
        real_save(tensors, filename, *args, **kwargs)  # half the folder is there
        raise KeyboardInterrupt
    monkeypatch.setattr(safetensors.torch, 'save_file', interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(['convert', str(src), '--model', 'eca_resnet18', '--out', str(tmp_path / 'hub' / 'out')])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['eca_resnet18_k3577.pth.tar', 'hub']
    assert list((tmp_path / 'hub').iterdir()) == []
    monkeypatch.undo()
    _train_folder(tmp_path / 'run')
    out = tmp_path / 'repo'
    main(['publish', str(tmp_path / 'run'), '--repo-id', 'me/x', '--dry-run', '--out', str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(safetensors.torch, 'save_file', interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(['publish', str(tmp_path / 'run'), '--repo-id', 'me/x', '--dry-run', '--out', str(out), '--force',
              '--no-ema'])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['eca_resnet18_k3577.pth.tar', 'hub', 'repo', 'run']


@pytest.mark.slow
def test_sigint_during_convert_leaves_nothing_behind(tmp_path):
    """Issue 20.17 with a real SIGINT: sent while convert writes its temporary folder."""
    import signal
    import subprocess
    import sys
    src = _official18(tmp_path / 'eca_resnet18_k3577.pth.tar')
    hub = tmp_path / 'hub'
    hub.mkdir()
    proc = subprocess.Popen([sys.executable, '-m', 'eca_timm.cli', 'convert', str(src), '--model', 'eca_resnet18',
                             '--out', str(hub / 'out')], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(hub.glob('.out.tmp-*')) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, 'convert finished before its temporary folder was seen'
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode != 0 and list(hub.iterdir()) == []
