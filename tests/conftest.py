"""Shared fixtures: timm's scripts (train.py, validate.py, ...) live outside the project.

Without CUDA, Triton's kernels run in Triton's interpreter on the CPU: TRITON_INTERPRET=1 is set here, before
eca_timm (and so its kernels) is imported, so ``test_fused_step.py`` can check them on any machine.
"""
import importlib.util
import os

import torch

if importlib.util.find_spec('triton') is not None and not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from eca_timm.train.run import SCRIPTS_HINT, find_scripts_dir  # noqa: E402


@pytest.fixture(scope='session')
def timm_scripts() -> Path:
    """Folder with timm's train.py/validate.py/benchmark.py/inference.py, or skip saying how to get them."""
    d = find_scripts_dir()
    if d is None:
        pytest.skip(f'timm scripts not found: {SCRIPTS_HINT}')
    return d
