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


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()
    return p.pid


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    """Issue 20.18: a second write of the same target refuses while another process writes it; only the
    temporaries of writers that died are removed."""
    import subprocess
    import sys
    out = tmp_path / 'repo'
    live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        busy = tmp_path / f'.repo.tmp-{live.pid}-abcd1234'
        busy.mkdir()
        (busy / 'model.safetensors').write_bytes(b'x')
        with pytest.raises(FileExistsError, match=rf'another process \(pid {live.pid}\) is writing .*repo'):
            with atomic_dir(out) as tmp:
                (tmp / 'a.txt').write_text('a')
        assert (busy / 'model.safetensors').exists() and not out.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == [busy.name]  # our own temporary is gone
        (tmp_path / f'.x.json.tmp-{live.pid}-abcd1234.json').write_text('half')
        with pytest.raises(FileExistsError, match=r'x\.json: another process .* is writing'):
            with atomic_write(tmp_path / 'x.json'):
                pass
        assert not (tmp_path / 'x.json').exists()
    finally:
        live.kill()
        live.wait()
    dead = tmp_path / f'.repo.tmp-{_dead_pid()}-efgh5678'
    dead.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / 'a.txt').write_text('a')
    assert not busy.exists() and not dead.exists() and os.listdir(out) == ['a.txt']
    assert sorted(p.name for p in tmp_path.iterdir()) == [f'.x.json.tmp-{live.pid}-abcd1234.json', 'repo']


def test_nested_writes_of_one_target_in_one_process_refuse(tmp_path):
    with atomic_dir(tmp_path / 'out') as first:
        with pytest.raises(FileExistsError, match=rf'this process \(pid {os.getpid()}\) is writing'):
            with atomic_dir(tmp_path / 'out'):
                pass
        assert first.is_dir()


def _read_only_dir(path):
    """``path`` made read-only the way root cannot bypass (chattr +i), else by mode bits when not root."""
    import shutil
    import subprocess
    path.mkdir()
    if shutil.which('chattr') and subprocess.run(['chattr', '+i', str(path)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(['chattr', '-i', str(path)], check=True)
    if os.geteuid() == 0:
        pytest.skip('root without chattr: no read-only folder to test with')
    path.chmod(0o555)
    return lambda: path.chmod(0o755)


def test_check_writable_names_the_users_path(tmp_path):
    from eca_timm._io import check_writable
    (tmp_path / 'afile.txt').write_text('x')
    with pytest.raises(NotADirectoryError, match=r'--out .*afile\.txt/sub: .*afile\.txt is a file, not a folder'):
        check_writable(tmp_path / 'afile.txt' / 'sub', '--out')
    with pytest.raises(IsADirectoryError, match=r'--output .*: is a folder; pass a file name'):
        check_writable(tmp_path, '--output')
    undo = _read_only_dir(tmp_path / 'ro')
    try:
        with pytest.raises(PermissionError, match=r"--output .*ro/deep/r\.json: cannot write in .*ro \("):
            check_writable(tmp_path / 'ro' / 'deep' / 'r.json', '--output')
    finally:
        undo()
    check_writable(tmp_path / 'new' / 'deeper' / 'r.json', '--output')  # creatable: fine, nothing is made
    assert sorted(p.name for p in tmp_path.iterdir()) == ['afile.txt', 'ro']


def test_json_helpers(tmp_path):
    from eca_timm._io import read_json, write_json
    write_json(tmp_path / 'a.json', {'b': [1, 2]}, indent=1)
    assert (tmp_path / 'a.json').read_text() == '{\n "b": [\n  1,\n  2\n ]\n}\n'
    assert read_json(tmp_path / 'a.json') == {'b': [1, 2]}
    (tmp_path / 'bad.json').write_text('{"b": ')
    with pytest.raises(ValueError, match=r'.*bad\.json is not valid JSON \(line 1, column 7: Expecting value\)'):
        read_json(tmp_path / 'bad.json')
    (tmp_path / 'u16.json').write_text('{}', encoding='utf-16')
    with pytest.raises(ValueError, match=r'.*u16\.json is not UTF-8 text'):
        read_json(tmp_path / 'u16.json')
