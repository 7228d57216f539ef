"""Shared fixtures: timm's scripts (train.py, validate.py, ...) live outside the project."""
import os
from pathlib import Path

import pytest

SCRIPT_NAMES = ('train.py', 'validate.py', 'benchmark.py', 'inference.py')


def _timm_scripts_dir():
    env = os.environ.get('TIMM_SCRIPTS')
    cache = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'eca-timm' / 'timm-scripts'
    for d in ([Path(env)] if env else []) + [cache]:
        if all((d / n).is_file() for n in SCRIPT_NAMES):
            return d
    return None


@pytest.fixture(scope='session')
def timm_scripts() -> Path:
    """Folder with timm's train.py/validate.py/benchmark.py/inference.py, or skip saying how to get them."""
    d = _timm_scripts_dir()
    if d is None:
        pytest.skip('timm scripts not found: set TIMM_SCRIPTS to a folder holding train.py, validate.py, '
                    'benchmark.py and inference.py from github.com/huggingface/pytorch-image-models '
                    '(or run `eca-timm quickstart` once online, which caches them in ~/.cache/eca-timm/timm-scripts)')
    return d
