"""Data folders that ship inside the package: ``hub/`` as ``eca_timm.hub_data``, ``train_configs/`` as
``eca_timm.train_configs``.

They are read through ``importlib.resources`` (a wheel, an editable install or a zip all work); only a source tree
run without installing (``PYTHONPATH=checkout``) falls back to the checkout's folders.
"""
import contextlib
import importlib.resources
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional, Union

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python < 3.11
    from importlib.abc import Traversable

__all__ = ['HUB_DATA', 'RECIPES', 'checkout_dir', 'data_file', 'data_path']

# package name -> the project folder it is built from (pyproject.toml's package-dir)
HUB_DATA = 'eca_timm.hub_data'
RECIPES = 'eca_timm.train_configs'
_FOLDERS = {HUB_DATA: 'hub', RECIPES: 'train_configs'}


def checkout_dir(folder: str) -> Optional[Path]:
    """``folder`` of the source checkout this package runs from, or None (an installed wheel has none)."""
    path = Path(__file__).resolve().parent.parent / folder
    if (path.parent / 'pyproject.toml').is_file() and path.is_dir():
        return path
    return None


def _root(package: str) -> Union[Traversable, Path]:
    try:
        return importlib.resources.files(package)
    except ModuleNotFoundError:  # a source tree on sys.path, not installed: the mapped packages do not exist
        checkout = checkout_dir(_FOLDERS[package])
        if checkout is None:
            raise
        return checkout


def data_file(package: str, relpath: str = '') -> Union[Traversable, Path]:
    """The packaged file or folder ``relpath`` ('/'-separated) of ``package`` (``HUB_DATA`` or ``RECIPES``)."""
    node = _root(package)
    for part in PurePosixPath(relpath).parts:
        node = node.joinpath(part)
    return node


@contextlib.contextmanager
def data_path(package: str, relpath: str) -> Iterator[Path]:
    """A real filesystem path of a packaged file for as long as the block runs (``importlib.resources.as_file``)."""
    with importlib.resources.as_file(data_file(package, relpath)) as path:
        yield Path(path)
