"""The package as users get it from PyPI: a wheel built from this checkout, imported with no checkout on sys.path."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter whose only eca_timm is the wheel's (PYTHONPATH=<target>, cwd outside the checkout).
CHECK = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import timm
    import eca_timm
    from eca_timm import cli
    from eca_timm.models import _pretrained
    from eca_timm.train.quickstart import RECIPE
    from eca_timm.train.run import recipe_file
    site = Path(sys.argv[1]).resolve()
    checkout = Path(sys.argv[2]).resolve()
    assert Path(eca_timm.__file__).resolve().is_relative_to(site), eca_timm.__file__
    assert not any(Path(p or '.').resolve() == checkout for p in sys.path), sys.path
    names = timm.list_models(module=list(eca_timm.MODEL_MODULES + eca_timm.STUDY_MODULES))
    for name in names:
        timm.create_model(name)
    assert cli.main(['models']) == 0
    with recipe_file(RECIPE) as quickstart_recipe, recipe_file('train_configs/imagenet') as imagenet:
        recipes = sorted(p.name for p in imagenet.glob('*.yaml'))
        out = dict(models=names, quickstart_recipe=str(quickstart_recipe),
                   quickstart_recipe_text=quickstart_recipe.read_text(), imagenet=recipes,
                   manifest_tags=sorted(_pretrained.load_manifest()['weights']))
    print('RESULT ' + json.dumps(out))
''')


@pytest.fixture(scope='module')
def wheel_site(tmp_path_factory) -> Path:
    """This checkout built as a wheel (pip, isolated build) and unpacked into a bare site folder."""
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'build', 'dist', '*.egg-info', '__pycache__', '.pytest_cache', 'output', 'runs',
        'quickstart', 'benchmarks'))
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    subprocess.run(pip + ['wheel', '--no-deps', '-w', str(tmp / 'dist'), str(src)], check=True)
    wheels = list((tmp / 'dist').glob('eca_timm-*.whl'))
    assert len(wheels) == 1, wheels
    site = tmp / 'site'
    subprocess.run(pip + ['install', '--no-deps', '--no-compile', '--target', str(site), str(wheels[0])], check=True)
    return site


@pytest.mark.slow
def test_wheel_imports_and_finds_its_data_without_the_checkout(wheel_site, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PYTHONPATH'] = str(wheel_site)
    proc = subprocess.run([sys.executable, '-c', CHECK, str(wheel_site), str(ROOT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT '))
    result = json.loads(line[len('RESULT '):])
    assert {'eca_resnet18', 'eca_resnet50', 'eca_resnet152', 'eca_mobilenetv2', 'eca_resnet18_cifar'} <= set(
        result['models'])
    assert 'eca_resnet50' in proc.stdout.split('RESULT ')[0]  # the models table was printed
    recipe = Path(result['quickstart_recipe'])
    assert recipe.resolve().is_relative_to(wheel_site.resolve())
    packaged = ROOT / 'train_configs' / 'fashion_mnist' / 'eca_resnet18_cifar.yaml'
    assert result['quickstart_recipe_text'] == packaged.read_text()
    assert result['imagenet'] == sorted(p.name for p in (ROOT / 'train_configs' / 'imagenet').glob('*.yaml'))
    manifest = json.loads((ROOT / 'hub' / 'manifest.json').read_text())
    assert result['manifest_tags'] == sorted(manifest['weights'])


@pytest.mark.slow
def test_wheel_ships_the_data_files_and_license(wheel_site):
    pkg = wheel_site / 'eca_timm'
    for rel in ('hub_data/manifest.json', 'hub_data/model_card.md', 'data/fashion_mnist_subset.npz',
                'train_configs/fashion_mnist/eca_resnet18_cifar.yaml', 'train_configs/coco/maskrcnn_eca_resnet50_fpn_1x.yaml'):
        assert (pkg / rel).is_file(), rel
    dist_info = next(wheel_site.glob('eca_timm-*.dist-info'))
    licenses = list(dist_info.rglob('LICENSE'))
    assert licenses and 'MIT License' in licenses[0].read_text()
    assert 'License-Expression: MIT' in (dist_info / 'METADATA').read_text()


def test_every_recipe_folder_is_a_listed_package():
    """setuptools warns ("Package would be ignored") for a data folder that is not in ``packages``: a new recipe
    folder goes into pyproject.toml's list too."""
    tomllib = pytest.importorskip('tomllib')  # Python 3.11+
    packages = set(tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['setuptools']['packages'])
    folders = {f'eca_timm.train_configs.{d.name}' for d in (ROOT / 'train_configs').iterdir()
               if d.is_dir() and not d.name.startswith(('.', '_'))}
    assert folders and folders - packages == set()
