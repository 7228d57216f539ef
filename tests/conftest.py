"""Shared fixtures: timm's scripts (train.py, validate.py, ...) live outside the project."""
from pathlib import Path

import pytest

from eca_timm.run import SCRIPTS_HINT, find_scripts_dir


@pytest.fixture(scope='session')
def timm_scripts() -> Path:
    """Folder with timm's train.py/validate.py/benchmark.py/inference.py, or skip saying how to get them."""
    d = find_scripts_dir()
    if d is None:
        pytest.skip(f'timm scripts not found: {SCRIPTS_HINT}')
    return d
