"""``eca-timm release DIR``: the maintainer's one step from the official release files to published tags.

For every manifest tag whose release file (``source.file``) is in DIR: convert it (strict load, verified), check its
sha256 against the manifest's (when recorded), and write the Hub folder to ``OUT/<model>.<tag>``. A dry run stops
there and says what ``--push`` would do. ``--push`` then uploads each folder to its repo and records the file's
sha256 and ``published: true`` in the checkout's hub/manifest.json (commit it). A folder an earlier run wrote is
uploaded as it is when it equals what this run writes (``--force`` replaces it otherwise).
"""
import argparse
import filecmp
import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from torch import nn

from .._io import check_writable
from ..models._pretrained import load_manifest, manifest_entry, repo_id
from .card import WeightsInfo
from .convert import convert_checkpoint
from .hub_folder import write_hub_folder
from .manifest import record_release
from .upload import upload_folder

__all__ = ['release', 'register']

_logger = logging.getLogger(__name__)


def _write_or_keep(model: nn.Module, folder: Path, repo: str, info: WeightsInfo, force: bool) -> str:
    """Write the Hub folder, or keep an existing one that is file for file what this run writes (a dry run's)."""
    if force or not folder.exists():
        write_hub_folder(model, folder, repo, info, force=force)
        return 'written'
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_hub_folder(model, Path(tmp) / folder.name, repo, info)
        names = sorted(p.name for p in fresh.iterdir())
        _, differ, missing = filecmp.cmpfiles(fresh, folder, names, shallow=False)
    if differ or missing:
        raise FileExistsError(
            f'{folder} exists and differs from what release writes for {info.source.get("file")} (in '
            f'{", ".join(differ + missing)}): pass --force to replace it, or another --out')
    return 'kept (as an earlier run wrote it)'


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
    check_writable(out_path, '--out', folder=True)
    done = []
    for item in planned:
        model_name, tag = item['tag'].split('.', 1)
        model, info = convert_checkpoint(item['file'], model_name, tag, vouched=True)  # its sha256 is recorded below
        folder = out_path / item['tag']
        state = _write_or_keep(model, folder, item['repo'], info, force)
        done.append(dict(item, folder=folder, sha256=info.source['sha256']))
        print(f"{item['tag']}: {item['file'].name} sha256 {info.source['sha256']} verified -> {folder} ({state})",
              flush=True)
    if not push:
        print(f'dry run: --push uploads {len(done)} folder(s) to ' + ', '.join(d['repo'] for d in done) +
              ' and records their sha256 and published: true in hub/manifest.json')
        return done
    for item in done:
        entry = manifest_entry(item['tag']) or {}
        if entry.get('published') and (entry.get('source') or {}).get('sha256') == item['sha256']:
            print(f"{item['tag']}: already published from this file ({item['repo']})", flush=True)
            continue
        upload_folder(item['folder'], item['repo'], force=force,
                      retry_hint=f'rerun `eca-timm release {release_dir} --out {out} --push`: it uploads the folders '
                                 f'kept in {out} as they are, and skips the tags already published')
        path = record_release([(item['tag'], item['sha256'])])  # at once: the manifest says what the Hub has
        print(f"{item['tag']}: published to {item['repo']}, recorded in {path}", flush=True)
    print('commit hub/manifest.json')
    return done


def _run(args: argparse.Namespace) -> int:
    release(args.release_dir, args.out, push=args.push, force=args.force)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        'release', help='maintainers: convert, verify and publish every official release file found in a folder',
        description='Convert every official release file the manifest lists that RELEASE_DIR holds (strict load, '
                    'sha256 checked when recorded) into OUT/<model>.<tag>; with --push, upload each folder and '
                    "record the file's sha256 and published: true in the source checkout's hub/manifest.json.")
    p.add_argument('release_dir', help='folder holding official release files (eca_resnet50_k3557.pth.tar, ...)')
    p.add_argument('--out', default='hub', help='where the Hub folders go (OUT/<model>.<tag>)')
    p.add_argument('--push', action='store_true', help='upload and record in hub/manifest.json (else a dry run)')
    p.add_argument('--force', action='store_true',
                   help='replace the files this command writes in existing folders and Hub repos')
    p.set_defaults(func=_run)
