"""eca-timm quickstart: the README's main job end to end (1 epoch), and fetching timm's scripts from a git repo."""
import subprocess

import pytest
import timm

from eca_timm import cli
from eca_timm.train.quickstart import quickstart
from eca_timm.train.scripts import EXTRA_SCRIPTS, fetch_scripts
from eca_timm.train.run import SCRIPT_NAMES

NAMES = SCRIPT_NAMES + EXTRA_SCRIPTS


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
    with pytest.raises(RuntimeError, match=r'could not clone .* at tag v.*Offline\? .*TIMM_SCRIPTS'):
        fetch_scripts(tmp_path / 'cache', repo_url=(tmp_path / 'unreachable').as_uri())
    assert not (tmp_path / 'cache').exists()


def test_scripts_command_finds_fetches_or_explains(timm_repo, tmp_path, monkeypatch, capsys):
    """`eca-timm scripts` only fetches (no training): found -> where; missing -> the matching tag; offline -> how."""
    monkeypatch.delenv('TIMM_SCRIPTS', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    dest = tmp_path / 'xdg' / 'eca-timm' / 'timm-scripts'
    assert cli.main(['scripts', '--repo-url', (tmp_path / 'unreachable').as_uri(), '--dest', str(dest)]) == 2
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
    assert cli.main(['quickstart', '--out', str(tmp_path)]) == 2
    assert 'is not empty: pass --out with a new folder' in capsys.readouterr().err


def test_quickstart_end_to_end(timm_scripts, tmp_path, capsys):
    """Train 1 epoch with train.py, validate, publish --dry-run, reload with local-dir: and validate again."""
    result = quickstart(tmp_path / 'qs', epochs=1, scripts_dir=timm_scripts)
    assert result['epochs'] == 1
    assert result['top1'] > 25.0  # 10 classes: chance is 10%; one epoch measured 44% here
    assert result['reloaded_top1'] == result['top1']  # the published folder is the same model
    assert (tmp_path / 'qs' / 'hub' / 'model.safetensors').is_file()
    assert 'reloaded from the published folder with local-dir:: top-1' in capsys.readouterr().out
