"""Shared fixtures: timm's scripts (train.py, validate.py, ...) live outside the project.

Without CUDA, Triton's kernels run in Triton's interpreter on the CPU: TRITON_INTERPRET=1 is set here, before
eca_timm (and so its kernels) is imported, so ``test_fused_step.py`` can check them on any machine.
"""
import importlib.util
import os
import signal

import torch

if importlib.util.find_spec('triton') is not None and not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

# Under pytest-xdist (``pytest -n 2``) the workers share the cores: each gets its part of them as torch threads, and
# so do the commands it starts (timm's scripts), instead of every process spinning up one thread per core.
_workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _workers > 1:
    _threads = str(max(1, (os.cpu_count() or 1) // _workers))
    os.environ['OMP_NUM_THREADS'] = _threads
    torch.set_num_threads(int(_threads))

# A suite started in the background (``nohup pytest &``) inherits SIGINT ignored, and so would every command the
# tests start: the Ctrl-C tests send SIGINT to their subprocesses, which must see it as a user would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


def pytest_collection_modifyitems(items):
    """The checks that run Triton's kernels in its interpreter (the ``triton`` fixture, or the ``backend`` fixture's
    Triton path) are marked slow: seconds each on the CPU."""
    for item in items:
        callspec = getattr(item, 'callspec', None)
        if 'triton' in item.fixturenames or (callspec is not None and callspec.params.get('backend') == 'triton'):
            item.add_marker(pytest.mark.slow)
