"""Atomic writes: the target changes only when the write completes, with the usual permissions, no temp left."""
import os
import stat

import pytest

from eca_timm._io import atomic_dir, atomic_write


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_replaces_on_success_only(tmp_path):
    target = tmp_path / 'a.json'
    target.write_bytes(b'old')
    with pytest.raises(RuntimeError, match='boom'):
        with atomic_write(target) as f:
            f.write(b'half')
            raise RuntimeError('boom')
    assert target.read_bytes() == b'old' and os.listdir(tmp_path) == ['a.json']
    with atomic_write(target) as f:
        f.write(b'new')
    assert target.read_bytes() == b'new' and os.listdir(tmp_path) == ['a.json']
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(target) == 0o666 & ~umask


def test_atomic_dir_replaces_on_success_only(tmp_path):
    out = tmp_path / 'repo'
    out.mkdir()
    (out / 'old.txt').write_text('old')
    with pytest.raises(RuntimeError, match='boom'):
        with atomic_dir(out) as tmp:
            (tmp / 'new.txt').write_text('half')
            raise RuntimeError('boom')
    assert os.listdir(out) == ['old.txt'] and os.listdir(tmp_path) == ['repo']
    with atomic_dir(out) as tmp:
        (tmp / 'new.txt').write_text('new')
    assert os.listdir(out) == ['new.txt'] and os.listdir(tmp_path) == ['repo']
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(out) == 0o777 & ~umask
