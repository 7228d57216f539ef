"""Atomic writes: build in a temporary file or folder beside the target, rename over it when complete.

An interrupted or failing write leaves the target as it was and no temporary behind; the temporaries a killed
process left (``.NAME.tmp-*``) are removed by the next write of the same target. Written files get the usual
permissions (``0666 & ~umask``), as if created with ``open``.
"""
import contextlib
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Union

__all__ = ['atomic_write', 'atomic_dir']

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale(folder: Path, name: str) -> None:
    """Remove the temporaries an interrupted write of ``folder/name`` left behind (``.name.tmp-*``, ``.name.old-*``)."""
    for stale in list(folder.glob(f'.{glob.escape(name)}.tmp-*')) + list(folder.glob(f'.{glob.escape(name)}.old-*')):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _publish_permissions(root: Path) -> None:
    """Files ``0666 & ~umask``, folders ``0777 & ~umask`` (mkstemp / mkdtemp and some writers make them private)."""
    mask = _umask()
    for path in [root, *root.rglob('*')] if root.is_dir() else [root]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[BinaryIO]:
    """Binary file object whose content replaces ``path`` only if the ``with`` block completes."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    _remove_stale(Path(folder), name)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{name}.tmp-', suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, 'wb') as f:
            yield f
        _publish_permissions(Path(tmp))  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike, merge: bool = False) -> Iterator[Path]:
    """Temporary folder that replaces the folder ``path`` (an existing one only once the new one is in place).

    ``merge``: an existing ``path`` is kept, and only the files written in the block replace theirs in it, one
    atomic rename each; nothing else in it is touched (what a command did not create is never deleted).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out.parent, out.name)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f'.{out.name}.tmp-'))
    try:
        yield tmp
        _publish_permissions(tmp)
        if merge and out.is_dir():
            for src in sorted(tmp.rglob('*')):
                dst = out / src.relative_to(tmp)
                if src.is_dir():
                    dst.mkdir(exist_ok=True)
                else:
                    os.replace(src, dst)
            return
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f'.{out.name}.old-'))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
