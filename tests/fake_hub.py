"""The Hugging Face Hub's HTTP API, as far as eca-timm's uploads and downloads reach it, served in-process.

huggingface_hub's own code runs (``HfApi.create_repo`` / ``create_branch`` / ``list_repo_files`` / ``upload_folder``,
``hf_hub_download``, ``get_hf_file_metadata``): only its HTTP client is replaced, through huggingface_hub's public
``set_client_factory``, by one whose transport answers like the Hub. Tests then check what reached the boundary:
the requests, their token, and the files a commit carried.
"""
import base64
import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import httpx2
import pytest
import yaml

TOKEN = 'hf_fake_token_for_tests'


class FakeHub:
    """Model repos by id: ``private`` and the files of each branch; ``requests`` lists (method, path) received;
    ``commits`` (repo, revision, summary, {path: bytes}) in order."""

    def __init__(self) -> None:
        self.repos: Dict[str, dict] = {}
        self.requests: List[Tuple[str, str]] = []
        self.commits: List[Tuple[str, str, str, Dict[str, bytes]]] = []
        self.authorizations: List[Optional[str]] = []

    def add_repo(self, repo_id: str, files: Dict[str, bytes], revision: str = 'main') -> None:
        self.repos.setdefault(repo_id, {'private': False, 'branches': {'main': {}}})['branches'][revision] = dict(files)

    @staticmethod
    def _json(status: int, data, **headers) -> httpx2.Response:
        return httpx2.Response(status, json=data, headers=headers)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        self.authorizations.append(request.headers.get('authorization'))
        if path.startswith('/api/') and request.headers.get('authorization') != f'Bearer {TOKEN}' and \
                path not in ('/api/agent-harnesses',) and request.method != 'HEAD':
            return self._json(401, {'error': 'Invalid credentials in Authorization header'})
        if path == '/api/repos/create':
            body = json.loads(request.content)
            repo = f"{body['organization']}/{body['name']}" if body.get('organization') else body['name']
            if repo in self.repos:
                return self._json(409, {'error': 'You already created this model repo', 'url': f'https://hf.co/{repo}'})
            self.repos[repo] = {'private': body.get('visibility') == 'private' or bool(body.get('private')),
                                'branches': {'main': {'.gitattributes': b'*.safetensors filter=lfs\n'}}}
            return self._json(200, {'url': f'https://huggingface.co/{repo}', 'name': repo})
        if path == '/api/validate-yaml':
            content = json.loads(request.content)['content']
            front = content.split('---\n')[1] if content.startswith('---\n') else ''
            try:
                meta = yaml.safe_load(front)
                assert isinstance(meta, dict)
            except Exception as e:
                return self._json(400, {'errors': [{'message': f'invalid YAML: {e}'}]})
            return self._json(200, {'errors': [], 'warnings': []})
        parts = path.split('/')
        if len(parts) >= 6 and parts[:3] == ['', 'api', 'models']:
            repo, action, rev = f'{parts[3]}/{parts[4]}', parts[5], '/'.join(parts[6:]) or 'main'
            if repo not in self.repos:
                return self._json(404, {'error': 'Repository not found'}, **{'X-Error-Code': 'RepoNotFound'})
            branches = self.repos[repo]['branches']
            if action == 'branch':
                branches.setdefault(rev, dict(branches['main']))
                return self._json(200, {})
            if rev not in branches:
                return self._json(404, {'error': f'Revision {rev} not found'}, **{'X-Error-Code': 'RevisionNotFound'})
            if action == 'tree':
                return self._json(200, [{'type': 'file', 'path': p, 'size': len(b),
                                         'oid': hashlib.sha1(b).hexdigest()} for p, b in sorted(branches[rev].items())])
            if action == 'preupload':
                files = json.loads(request.content)['files']
                return self._json(200, {'files': [{'path': f['path'], 'uploadMode': 'regular', 'shouldIgnore': False}
                                                  for f in files]})
            if action == 'commit':
                lines = [json.loads(line) for line in request.content.splitlines() if line.strip()]
                summary = next(x['value']['summary'] for x in lines if x['key'] == 'header')
                files = {x['value']['path']: base64.b64decode(x['value']['content']) for x in lines
                         if x['key'] == 'file'}
                branches[rev].update(files)
                self.commits.append((repo, rev, summary, files))
                oid = hashlib.sha1(repr(len(self.commits)).encode()).hexdigest()
                return self._json(200, {'commitUrl': f'https://huggingface.co/{repo}/commit/{oid}', 'commitOid': oid})
        # downloads: /<org>/<name>/resolve/<revision>/<file>
        if len(parts) >= 6 and parts[3] == 'resolve':
            repo, rev, name = f'{parts[1]}/{parts[2]}', parts[4], '/'.join(parts[5:])
            if repo not in self.repos:
                return httpx2.Response(401, headers={'X-Error-Code': 'RepoNotFound',
                                                     'X-Error-Message': 'Repository not found'})
            data = self.repos[repo]['branches'].get(rev, {}).get(name)
            if data is None:
                return httpx2.Response(404, headers={'X-Error-Code': 'EntryNotFound'})
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            headers = {'ETag': etag, 'X-Repo-Commit': '0' * 40, 'Content-Length': str(len(data))}
            return httpx2.Response(200, headers=headers, content=b'' if request.method == 'HEAD' else data)
        return self._json(404, {'error': f'not served here: {request.method} {path}'})


def serve(handler) -> None:
    """Route huggingface_hub's HTTP client through ``handler`` (huggingface_hub's request hook kept)."""
    from huggingface_hub.utils import set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(handler), follow_redirects=True,
                                             event_hooks={'request': [hf_request_event_hook]}))


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A ``FakeHub`` behind huggingface_hub, with a valid HF_TOKEN and a private HF_HOME."""
    from huggingface_hub.utils import set_client_factory
    from huggingface_hub.utils._http import default_client_factory
    hub = FakeHub()
    monkeypatch.setenv('HF_TOKEN', TOKEN)
    serve(hub.handle)
    yield hub
    set_client_factory(default_client_factory)


def committed(hub: FakeHub, repo: str) -> Dict[str, bytes]:
    """The files of the last commit to ``repo``."""
    return next(files for r, _, _, files in reversed(hub.commits) if r == repo)


def same_files(folder: Path, files: Dict[str, bytes]) -> bool:
    return sorted(files) == sorted(p.name for p in folder.iterdir()) and \
        all((folder / name).read_bytes() == data for name, data in files.items())
