"""eca-timm quickstart's pieces that run without a network: fetching timm's scripts from a (local) git repo."""
import subprocess

import pytest
import timm

from eca_timm import cli
from eca_timm.quickstart import EXTRA_SCRIPTS, fetch_scripts
from eca_timm.run import SCRIPT_NAMES

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


def test_quickstart_refuses_a_used_folder(tmp_path, capsys):
    (tmp_path / 'old.txt').write_text('x')
    assert cli.main(['quickstart', '--out', str(tmp_path)]) == 2
    assert 'is not empty: pass --out with a new folder' in capsys.readouterr().err
