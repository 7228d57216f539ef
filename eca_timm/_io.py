"""Files in and out: atomic writes, and reads whose errors name the file.

An interrupted or failing write leaves the target as it was and no temporary behind. Temporaries carry their
writer's pid (``.NAME.tmp-<pid>-*``): the next write of the same target removes those of writers that died
(``kill -9``) and refuses while another live process writes it. Written files get the usual permissions
(``0666 & ~umask``), as if created with ``open``. ``check_writable`` refuses an unwritable target before any work.

Reads (``read_text``, ``read_yaml_mapping``, ``read_json``, and timm train.py's ``read_train_args`` and
``read_summary``, read the way the study, quickstart and publishing need them) raise ``ValueError`` with the path
first and what is wrong (not UTF-8, not valid YAML or JSON with line and column, empty, not a mapping, not a
summary.csv), so a command can print it as its one error line.
"""
import contextlib
import csv
import glob
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, Optional, Union

__all__ = ['atomic_write', 'atomic_dir', 'check_writable', 'read_json', 'read_summary', 'read_text', 'read_train_args',
           'read_yaml_mapping', 'write_json']

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _writer_pid(temporary: Path, name: str) -> Optional[int]:
    """The pid in ``.NAME.tmp-<pid>-*`` (None for an older name without one)."""
    m = re.match(r'(\d+)-', temporary.name[len(name) + 6:])
    return int(m.group(1)) if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _claim(folder: Path, name: str, own: Path) -> None:
    """Remove what dead writers of ``folder/name`` left (``.name.tmp-*``, ``.name.old-*``); refuse while a live
    process (this one included) writes it. Called once ``own`` exists, so two racing writers cannot both pass."""
    pattern = glob.escape(name)
    for other in sorted(folder.glob(f'.{pattern}.tmp-*')) + sorted(folder.glob(f'.{pattern}.old-*')):
        if other == own:
            continue
        pid = _writer_pid(other, name)
        if pid is not None and _alive(pid):
            who = 'this process' if pid == os.getpid() else 'another process'
            raise FileExistsError(
                f'{folder / name}: {who} (pid {pid}) is writing it now ({other.name}); wait for it to finish, or '
                f'write to another path')
        if other.is_dir() and not other.is_symlink():
            shutil.rmtree(other, ignore_errors=True)
        else:
            other.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _publish_permissions(root: Path) -> None:
    """Files ``0666 & ~umask``, folders ``0777 & ~umask`` (mkstemp / mkdtemp and some writers make them private)."""
    mask = _umask()
    for path in [root, *root.rglob('*')] if root.is_dir() else [root]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _prefix(name: str, kind: str = 'tmp') -> str:
    return f'.{name}.{kind}-{os.getpid()}-'


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[BinaryIO]:
    """Binary file object whose content replaces ``path`` only if the ``with`` block completes."""
    folder = Path(os.path.abspath(path)).parent
    folder.mkdir(parents=True, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=_prefix(name), suffix=os.path.splitext(path)[1])
    tmp = Path(tmp_name)
    try:
        _claim(folder, name, tmp)
        with os.fdopen(fd, 'wb') as f:
            fd = -1
            yield f
        _publish_permissions(tmp)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if fd != -1:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike, merge: bool = False) -> Iterator[Path]:
    """Temporary folder that replaces the folder ``path`` (an existing one only once the new one is in place).

    ``merge``: an existing ``path`` is kept, and only the files written in the block replace theirs in it, one
    atomic rename each; nothing else in it is touched (what a command did not create is never deleted).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=_prefix(out.name)))
    try:
        _claim(out.parent, out.name, tmp)
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
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=_prefix(out.name, 'old')))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            _remove(tmp)


def check_writable(path: PathLike, option: str, folder: bool = False) -> None:
    """Refuse, before any work, a target the atomic writers could not write, naming the user's ``option PATH``.

    ``path`` is a file to write (``folder``: a folder); the folders above it may not exist yet. The nearest one that
    exists must be a folder this process can create files in (tried with a hidden file, removed at once: mode
    bits, read-only mounts and ``chattr +i`` alike).
    """
    target = Path(path)
    shown = f'{option} {path}'
    if target.exists() and target.is_dir() != folder:
        raise (NotADirectoryError(f'{shown}: is a file; pass a folder') if folder else
               IsADirectoryError(f'{shown}: is a folder; pass a file name'))
    existing = Path(os.path.abspath(target)).parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f'{shown}: {existing} is a file, not a folder; pass a path in a folder')
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=_prefix(target.name, 'probe'))
    except OSError as e:
        raise PermissionError(
            f'{shown}: cannot write in {existing} ({e.strerror}); pass a path in a folder you can write to') from e
    os.close(fd)
    os.unlink(probe)


def write_json(path: PathLike, data: Any, indent: int = 2) -> None:
    """``data`` as JSON (and a final newline) in ``path``, atomically."""
    with atomic_write(path) as f:
        f.write((json.dumps(data, indent=indent) + '\n').encode('utf-8'))


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
        raise ValueError(f'{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix or replace '
                         f'it') from e


def read_train_args(path: PathLike) -> Dict[str, Any]:
    """timm train.py's args.yaml (its arguments, a mapping); a file that is not one is a ``ValueError`` naming it."""
    return read_yaml_mapping(path, "train.py's args.yaml (its arguments)")


def read_summary(path: PathLike) -> Dict[int, Dict[str, float]]:
    """train.py's summary.csv as {epoch: row}; the last row of an epoch wins (a resumed run repeats the header
    and may redo the epoch it was killed in; a row cut short by a kill is skipped).

    A file that is not one (not UTF-8 text, empty, no ``epoch`` column, only a header, a value that is not a
    number) is a ``ValueError`` naming the file and why.
    """
    def refuse(why: str) -> ValueError:
        return ValueError(f'{path} is not a train.py summary.csv ({why}): fix or remove it')

    rows = list(csv.reader(read_text(path).splitlines()))
    if not rows:
        raise refuse('the file is empty')
    header = rows[0]
    if 'epoch' not in header:
        raise refuse(f'its first line {",".join(header)[:60]!r} has no epoch column')
    out = {}
    for line, r in enumerate(rows[1:], 2):
        if r == header or len(r) != len(header):
            continue
        try:
            row = {k: float(v) for k, v in zip(header, r)}
        except ValueError:
            bad = next((k, v) for k, v in zip(header, r) if not _is_number(v))
            raise refuse(f'line {line}: {bad[0]} is {bad[1]!r}, not a number') from None
        out[int(row['epoch'])] = row
    if not out:
        raise refuse('it has a header but no epoch rows')
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
