"""``eca-timm release DIR``: the maintainer's one step from the official release files to published tags.

For every manifest tag whose release file (``source.file``) is in DIR: convert it (strict load, verified), check its
sha256 against the manifest's (when recorded), and write the Hub folder to ``OUT/<model>.<tag>``. A dry run stops
there and says what ``--push`` would do. ``--push`` then uploads each folder to its repo and records the file's
sha256 and ``published: true`` in the checkout's hub/manifest.json (commit it).
"""
import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, List

from ..models._pretrained import load_manifest, repo_id
from .convert import convert, file_sha256
from . import hub_folder
from .publish import upload_folder

__all__ = ['release', 'register']

_logger = logging.getLogger(__name__)


def _record_release(done: List[Dict[str, Any]]) -> Path:
    """Write each released tag's sha256 and ``published: true`` into the checkout's hub/manifest.json."""
    path = hub_folder.checkout_manifest('release --push')
    manifest = json.loads(path.read_text(encoding='utf-8'))
    for item in done:
        entry = manifest['weights'][item['tag']]
        entry['published'] = True
        entry.setdefault('source', {})['sha256'] = item['sha256']
    hub_folder.write_manifest(path, manifest)
    return path


def release(release_dir: str, out: str, push: bool = False, force: bool = False) -> List[Dict[str, Any]]:
    """Convert (and with ``push`` publish and record) every official release file found in ``release_dir``."""
    release_dir_path, out_path = Path(release_dir), Path(out)
    if not release_dir_path.is_dir():
        raise FileNotFoundError(f'{release_dir}: no such folder (pass the folder holding the official .pth.tar files)')
    planned = []
    for tag, entry in load_manifest()['weights'].items():
        file = (entry.get('source') or {}).get('file')
        if file and (release_dir_path / file).is_file():
            planned.append(dict(tag=tag, file=release_dir_path / file, repo=repo_id(tag)))
    if not planned:
        files = sorted({(e.get('source') or {}).get('file') for e in load_manifest()['weights'].values()} - {None})
        raise FileNotFoundError(f'{release_dir} holds none of the release files the manifest lists: {", ".join(files)}')
    done = []
    for item in planned:
        model_name, tag = item['tag'].split('.', 1)
        folder = convert(str(item['file']), model_name, str(out_path / item['tag']), tag=tag, force=force)
        done.append(dict(item, folder=folder, sha256=file_sha256(str(item['file']))))
        print(f"{item['tag']}: {item['file'].name} sha256 {done[-1]['sha256']} verified -> {folder}", flush=True)
    if not push:
        print(f'dry run: --push uploads {len(done)} folder(s) to ' + ', '.join(d['repo'] for d in done) +
              ' and records their sha256 and published: true in hub/manifest.json')
        return done
    for item in done:
        upload_folder(item['folder'], item['repo'], force=force)
        print(f"{item['tag']}: published to {item['repo']}", flush=True)
    print(f'recorded in {_record_release(done)}: commit it')
    return done


def _run(args: argparse.Namespace) -> int:
    release(args.release_dir, args.out, push=args.push, force=args.force)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'release', help='maintainers: convert, verify and publish every official release file found in a folder',
        description='For every manifest tag whose release file (source.file) is in DIR: convert it (strict load, '
                    'verified), check its sha256 against the manifest\'s (when recorded), and write the Hub folder to '
                    'OUT/<model>.<tag>. A dry run stops there and says what --push would do; --push then uploads each '
                    'folder to its repo and records the file\'s sha256 and "published: true" in the checkout\'s '
                    'hub/manifest.json (commit it).')
    p.add_argument('release_dir', help='folder holding official release files (eca_resnet50_k3557.pth.tar, ...)')
    p.add_argument('--out', default='hub', help='where the Hub folders go (OUT/<model>.<tag>)')
    p.add_argument('--push', action='store_true', help='upload and record in hub/manifest.json (else a dry run)')
    p.add_argument('--force', action='store_true',
                   help='replace the files this command writes in existing folders and Hub repos')
    p.set_defaults(func=_run)
