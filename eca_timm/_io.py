"""Files in and out: atomic writes, and reads whose errors name the file.

Writes build in a temporary file or folder beside the target and rename over it when complete. An interrupted or
failing write leaves the target as it was and no temporary behind; the temporaries a killed process left
(``.NAME.tmp-*``) are removed by the next write of the same target. Written files get the usual permissions
(``0666 & ~umask``), as if created with ``open``.

Reads (``read_text``, ``read_yaml_mapping``, ``read_json``) raise ``ValueError`` with the path first and what is
wrong (not UTF-8, not valid YAML or JSON with line and column, empty, not a mapping), so a command can print it as
its one error line.
"""
import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, Union

__all__ = ['atomic_write', 'atomic_dir', 'read_text', 'read_yaml_mapping', 'read_json']

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


def read_text(path: PathLike) -> str:
    """The UTF-8 text of ``path``; a file that is not UTF-8 text is a ``ValueError`` naming it."""
    data = Path(path).read_bytes()
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise ValueError(f'{path} is not UTF-8 text (byte {e.start}: {e.reason}): save it as UTF-8') from e


def _where(error: Any) -> str:
    """'line L, column C: problem' of a YAML error (1-based, as an editor shows them)."""
    mark = getattr(error, 'problem_mark', None)
    problem = getattr(error, 'problem', None) or ' '.join(str(error).split())
    return f'line {mark.line + 1}, column {mark.column + 1}: {problem}' if mark is not None else problem


def read_yaml_mapping(path: PathLike, what: str = 'a YAML mapping') -> Dict[str, Any]:
    """The mapping a YAML file holds; ``what`` names the content expected (e.g. 'a train.py recipe').

    A file that is empty, not valid YAML or not a mapping is a ``ValueError`` naming the file and where it fails.
    """
    import yaml
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f'{path} is not valid YAML ({_where(e)}): fix it') from e
    if data is None:
        raise ValueError(f'{path} is empty: expected {what}')
    if not isinstance(data, dict):
        raise ValueError(f'{path} is not {what}: it holds a YAML {type(data).__name__}, not a mapping of names to '
                         f'values')
    return data


def read_json(path: PathLike) -> Any:
    """The JSON value of ``path``; a file that is not UTF-8 JSON is a ``ValueError`` naming it and where."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f'{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})') from e
