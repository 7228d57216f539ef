"""``eca-timm scripts``: timm's train.py, validate.py, benchmark.py, inference.py for the installed timm.

They are not in the timm wheel. The command looks where the runner looks (``--scripts-dir``, ``$TIMM_SCRIPTS``, the
cache ``~/.cache/eca-timm/timm-scripts``) and, when none has them, shallow-clones timm's release tag matching the
installed timm into the cache. It only fetches: it trains nothing. Offline, it says how to provide them by hand.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import timm

from .run import SCRIPT_NAMES, default_scripts_cache, find_scripts_dir

__all__ = ['EXTRA_SCRIPTS', 'TIMM_REPO_URL', 'fetch_scripts', 'offline_hint', 'register']

TIMM_REPO_URL = 'https://github.com/huggingface/pytorch-image-models'
EXTRA_SCRIPTS = ('distributed_train.sh',)


def offline_hint(version: str = timm.__version__, repo_url: str = TIMM_REPO_URL) -> str:
    """How to provide the scripts without network access to GitHub."""
    return (f'on a machine with access, copy {", ".join(SCRIPT_NAMES + EXTRA_SCRIPTS)} of timm v{version} '
            f'({repo_url}/tree/v{version}) into a folder, bring it here and set TIMM_SCRIPTS to it (or pass '
            f'--scripts-dir)')


def fetch_scripts(dest: Optional[os.PathLike] = None, version: str = timm.__version__,
                  repo_url: str = TIMM_REPO_URL) -> Path:
    """Shallow-clone timm's release tag ``v<version>`` and copy its scripts into ``dest`` (the cache by default).

    Only the scripts are kept (a timm checkout next to them would shadow the installed timm). ``dest`` is
    filled in a temporary folder and renamed, so an interrupted fetch leaves nothing behind.
    """
    dest = Path(dest) if dest else default_scripts_cache()
    if shutil.which('git') is None:
        raise RuntimeError(f'git is needed to fetch timm\'s scripts; or {offline_hint(version, repo_url)}')
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        clone = Path(tmp) / 'repo'
        proc = subprocess.run(['git', 'clone', '--quiet', '--depth', '1', '--branch', f'v{version}', repo_url,
                               str(clone)], capture_output=True, text=True)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ['git clone failed'])[-1]
            raise RuntimeError(
                f'could not clone {repo_url} at tag v{version} (the installed timm): {reason}. Offline? '
                f'{offline_hint(version, repo_url)[0].upper()}{offline_hint(version, repo_url)[1:]}')
        staged = Path(tmp) / 'scripts'
        staged.mkdir()
        for name in SCRIPT_NAMES + EXTRA_SCRIPTS:
            if not (clone / name).is_file():
                raise RuntimeError(f'{repo_url} at v{version} has no {name}')
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
    try:
        dest = fetch_scripts(args.dest, repo_url=args.repo_url)
    except RuntimeError as e:
        print(f'eca-timm scripts: error: {e}', file=sys.stderr)
        return 2
    print(f'timm scripts of timm v{timm.__version__}: {dest}')
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'scripts', help="find or fetch timm's train.py / validate.py / benchmark.py / inference.py",
        description=__doc__.split('\n\n')[0].replace('``', "'"))
    p.add_argument('--scripts-dir', default=None, help='look here first (then $TIMM_SCRIPTS, then the cache)')
    p.add_argument('--dest', default=str(default_scripts_cache()), help='where to fetch them to')
    p.add_argument('--refresh', action='store_true', help='fetch again even where they are found')
    p.add_argument('--repo-url', default=TIMM_REPO_URL, help="timm's git repository")
    p.set_defaults(func=_run)
