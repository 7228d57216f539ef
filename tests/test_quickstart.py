"""eca-timm quickstart: the README's main job end to end (1 epoch), and fetching timm's scripts from a git repo."""
import subprocess
from pathlib import Path

import pytest
import timm
import yaml

from eca_timm import cli
from eca_timm.train.quickstart import quickstart
from eca_timm.train.run import SCRIPT_FILES, SCRIPTS_HINT
from eca_timm.train.scripts import fetch_scripts

NAMES = SCRIPT_FILES
ROOT = Path(__file__).resolve().parents[1]


def _git(*args, cwd):
    subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@example.com', *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def timm_repo(tmp_path):
    """A stand-in for pytorch-image-models: the scripts plus a timm/ package, tagged like the installed timm."""
    repo = tmp_path / 'pytorch-image-models'
    (repo / 'timm').mkdir(parents=True)
    (repo / 'timm' / '__init__.py').write_text('')
    for name in NAMES:
        (repo / name).write_text(f'# {name} of timm v{timm.__version__}\n')
    _git('init', '-q', '.', cwd=repo)
    _git('add', '.', cwd=repo)
    _git('commit', '-qm', 'release', cwd=repo)
    _git('tag', f'v{timm.__version__}', cwd=repo)
    (repo / 'train.py').write_text('# a later commit\n')
    _git('commit', '-qam', 'after the release', cwd=repo)
    return repo


def test_fetch_scripts_clones_the_matching_tag(timm_repo, tmp_path):
    dest = fetch_scripts(tmp_path / 'cache' / 'timm-scripts', repo_url=timm_repo.as_uri())
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)  # scripts only, no timm/ to shadow the wheel
    assert (dest / 'train.py').read_text() == f'# train.py of timm v{timm.__version__}\n'
    assert sorted(p.name for p in dest.parent.iterdir()) == ['timm-scripts']  # no temporary leftovers


def test_fetch_scripts_offline_error(tmp_path):
    with pytest.raises(OSError, match=r'could not clone .* at tag v.*Offline\? .*TIMM_SCRIPTS'):
        fetch_scripts(tmp_path / 'cache', repo_url=(tmp_path / 'unreachable').as_uri())
    assert not (tmp_path / 'cache').exists()


def test_the_hints_name_the_same_files_the_clone_copies(tmp_path):
    files = ', '.join(NAMES)
    assert NAMES == ('train.py', 'validate.py', 'benchmark.py', 'inference.py', 'distributed_train.sh')
    with pytest.raises(OSError) as e:
        fetch_scripts(tmp_path / 'cache', repo_url=(tmp_path / 'unreachable').as_uri())
    assert f'copy {files} of timm v{timm.__version__}' in str(e.value) and f'copy {files} of' in SCRIPTS_HINT


def test_scripts_command_finds_fetches_or_explains(timm_repo, tmp_path, monkeypatch, capsys):
    """`eca-timm scripts` only fetches (no training): found -> where; missing -> the matching tag; offline -> how."""
    monkeypatch.delenv('TIMM_SCRIPTS', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    dest = tmp_path / 'xdg' / 'eca-timm' / 'timm-scripts'
    assert cli.console(['scripts', '--repo-url', (tmp_path / 'unreachable').as_uri(), '--dest', str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('eca-timm scripts: error: could not clone')
    assert 'Offline? On a machine with access, copy train.py' in err and 'set TIMM_SCRIPTS' in err
    assert cli.main(['scripts', '--repo-url', timm_repo.as_uri(), '--dest', str(dest)]) == 0
    assert f'timm scripts of timm v{timm.__version__}: {dest}' in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)
    assert cli.main(['scripts', '--repo-url', (tmp_path / 'unreachable').as_uri()]) == 0  # found: no fetch
    assert capsys.readouterr().out.strip() == f'timm scripts: {dest}'


def test_quickstart_refuses_a_used_folder(tmp_path, capsys):
    (tmp_path / 'old.txt').write_text('x')
    assert cli.console(['quickstart', '--out', str(tmp_path)]) == 2
    assert 'is not empty: pass --out with a new folder' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['old.txt']


@pytest.mark.slow
def test_a_failed_step_shows_its_log_and_removes_what_it_wrote(timm_scripts, tmp_path, capsys):
    """train.py fails after the data was written: the log's end is shown, OUT is gone, the rerun can start."""
    recipe = tmp_path / 'recipe.yaml'
    config = yaml.safe_load((ROOT / 'train_configs/fashion_mnist/eca_resnet18_cifar.yaml').read_text())
    recipe.write_text(yaml.safe_dump(dict(config, model_kwargs={'eca_kernel_sizes': 4})))  # fails in train.py
    out = tmp_path / 'qs'
    assert cli.console(['quickstart', '--out', str(out), '--recipe', str(recipe), '--epochs', '1',
                        '--scripts-dir', str(timm_scripts)]) == 2
    captured = capsys.readouterr()
    assert f'--- last lines of {out}/train.log:' in captured.err and 'ECA kernel size must be' in captured.err
    assert captured.err.strip().splitlines()[-1] == (
        'eca-timm quickstart: error: train failed (exit status 2); its output is above')
    assert not out.exists()


@pytest.mark.slow
def test_quickstart_end_to_end(timm_scripts, tmp_path, capsys):
    """Train 1 epoch with train.py, validate, publish --dry-run, reload with local-dir: and validate again."""
    result = quickstart(tmp_path / 'qs', epochs=1, scripts_dir=timm_scripts)
    assert result['epochs'] == 1
    assert result['top1'] > 25.0  # 10 classes: chance is 10%; one epoch measured 44% here
    assert result['reloaded_top1'] == result['top1']  # the published folder is the same model
    hub = tmp_path / 'qs' / 'hub'
    assert (hub / 'model.safetensors').is_file()
    out = capsys.readouterr().out
    # progress lines and the two accuracies only: the scripts' own output (--result JSON, logs) is in the logs
    assert '--result' not in out and 'Test:' not in out and '::' not in out
    assert 'train.py: epoch 1/1, top-1 ' in out
    assert f'reloaded from the published folder (local-dir:{hub}): top-1 {result["reloaded_top1"]:.2f}%' in out
    assert f'top-1 {result["top1"]:.2f}% on 200 held-out images' in out
    assert len(out.strip().splitlines()) < 25
    for step in ('train', 'validate', 'publish', 'validate_reloaded'):
        assert (tmp_path / 'qs' / f'{step}.log').stat().st_size > 0
    assert '--result' in (tmp_path / 'qs' / 'validate.log').read_text()
