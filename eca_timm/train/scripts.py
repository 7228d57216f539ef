"""``eca-timm scripts``: timm's train.py, validate.py, benchmark.py, inference.py for the installed timm.

They are not in the timm wheel. The command looks where the runner looks (``--scripts-dir``, ``$TIMM_SCRIPTS``, the
cache ``~/.cache/eca-timm/timm-scripts``) and, when none has them, shallow-clones timm's release tag matching the
installed timm into the cache. It only fetches: it trains nothing. Offline, it says how to provide them by hand.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

import timm

from .run import SCRIPT_FILES, TIMM_REPO_URL, default_scripts_cache, find_scripts_dir, offline_hint

__all__ = ['fetch_scripts', 'register']


def fetch_scripts(dest: Optional[os.PathLike] = None, version: str = timm.__version__,
                  repo_url: str = TIMM_REPO_URL) -> Path:
    """Shallow-clone timm's release tag ``v<version>`` and copy its scripts into ``dest`` (the cache by default).

    Only the scripts are kept (a timm checkout next to them would shadow the installed timm). ``dest`` is
    filled in a temporary folder and renamed, so an interrupted fetch leaves nothing behind.
    """
    dest = Path(dest) if dest else default_scripts_cache()
    if shutil.which('git') is None:
        raise FileNotFoundError(f'git is needed to fetch timm\'s scripts; or {offline_hint(version, repo_url)}')
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        clone = Path(tmp) / 'repo'
        proc = subprocess.run(['git', 'clone', '--quiet', '--depth', '1', '--branch', f'v{version}', repo_url,
                               str(clone)], capture_output=True, text=True)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ['git clone failed'])[-1].rstrip('.')
            raise OSError(f'could not clone {repo_url} at tag v{version} (the installed timm): {reason}. Offline? '
                          f'On a machine with access, {offline_hint(version, repo_url)}')
        staged = Path(tmp) / 'scripts'
        staged.mkdir()
        for name in SCRIPT_FILES:
            if not (clone / name).is_file():
                raise FileNotFoundError(f'{repo_url} at v{version} has no {name}')
            shutil.copy2(clone / name, staged / name)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staged, dest)
    return dest


def _run(args: argparse.Namespace) -> int:
    found = find_scripts_dir(args.scripts_dir)
    if found is not None and not args.refresh:
        print(f'timm scripts: {found}')
        return 0
    dest = fetch_scripts(args.dest, repo_url=args.repo_url)
    print(f'timm scripts of timm v{timm.__version__}: {dest}')
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'scripts', help="find or fetch timm's train.py / validate.py / benchmark.py / inference.py",
        description='Find timm\'s train.py, validate.py, benchmark.py and inference.py for the installed timm '
                    '(they are not in the timm wheel) where eca-timm run looks for them, or fetch them: a shallow '
                    'clone of the timm release tag matching the installed timm, of which only the scripts are kept '
                    'in the cache. It trains nothing.',
        epilog='examples:\n  eca-timm scripts\n  eca-timm scripts --refresh')
    p.add_argument('--scripts-dir', default=None, help='look here first (then $TIMM_SCRIPTS, then the cache)')
    p.add_argument('--dest', default=str(default_scripts_cache()), help='where to fetch them to')
    p.add_argument('--refresh', action='store_true', help='fetch again even where they are found')
    p.add_argument('--repo-url', default=TIMM_REPO_URL, help="timm's git repository")
    p.set_defaults(func=_run, interrupted_note='nothing written')
