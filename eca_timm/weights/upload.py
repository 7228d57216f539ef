"""Uploads to the Hugging Face Hub through ``huggingface_hub.HfApi``: the repo and branch created if needed, an
existing card or weights replaced only when forced, and the Hub's refusals (no network, a refused token) as one
line that says what to do."""
import os
from pathlib import Path
from typing import Any, Optional

from .._version import __version__
from ..models._pretrained import hub_unreachable

__all__ = ['PROTECTED_FILES', 'upload_folder']

# Files of a repo that are never replaced without --force.
PROTECTED_FILES = ('README.md', 'config.json', 'model.safetensors', 'pytorch_model.bin')


def _token_source() -> Optional[str]:
    """Where huggingface_hub takes its token from (``get_token``'s order), never the token itself."""
    from huggingface_hub import constants
    for env in ('HF_OIDC_RESOURCE', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN'):
        if os.environ.get(env):
            return f'the {env} environment variable'
    if Path(constants.HF_TOKEN_PATH).is_file():
        return f'the token file {constants.HF_TOKEN_PATH} (written by `hf auth login`)'
    return None


def _refusal(error: BaseException, repo_id: str) -> Optional[PermissionError]:
    """A 401 / 403 from the Hub as the token problem it is, naming where the token came from."""
    from huggingface_hub.errors import HfHubHTTPError
    status = getattr(getattr(error, 'response', None), 'status_code', None)
    if not isinstance(error, HfHubHTTPError) or status not in (401, 403):
        return None
    said = ' '.join((getattr(error, 'server_message', None) or '').split())
    said = f': {said}' if said else ''
    source = _token_source()
    if source is None:
        return PermissionError(f'the Hugging Face Hub needs a token to upload to {repo_id} ({status}{said}): run '
                               f'`hf auth login`, or set HF_TOKEN to a token with write access')
    if status == 401:
        return PermissionError(f'the Hugging Face Hub refused the token from {source} ({status} Unauthorized{said}): '
                               f'it is invalid or expired; replace it (`hf auth login`, or another HF_TOKEN)')
    return PermissionError(f'the token from {source} may not write to {repo_id} ({status} Forbidden{said}): use a '
                           f'token with write access to {repo_id.split("/")[0]}')


def upload_folder(
        folder: Path,
        repo_id: str,
        private: bool = False,
        revision: Optional[str] = None,
        commit_message: Optional[str] = None,
        force: bool = False,
        retry_hint: str = 'upload the folder again once the Hub can be reached',
) -> Any:
    """Create the repo (and branch) if needed and upload ``folder``; existing card/weights need ``force``.
    Returns huggingface_hub's ``CommitInfo``. ``retry_hint``: what to do when the Hub cannot be reached."""
    try:
        return _upload(folder, repo_id, private, revision, commit_message, force)
    except Exception as e:
        refusal = _refusal(e, repo_id)
        if refusal is not None:
            raise refusal from e
        if hub_unreachable(e):
            raise ConnectionError(
                f'the Hugging Face Hub cannot be reached (offline?) to upload to {repo_id} '
                f'({type(e).__name__}: {" ".join(str(e).split())}); check the network, then {retry_hint}') from e
        raise


def _upload(folder: Path, repo_id: str, private: bool, revision: Optional[str], commit_message: Optional[str],
            force: bool) -> Any:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError
    api = HfApi(library_name='eca-timm', library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    try:
        existing = set(api.list_repo_files(repo_id, revision=revision))
    except RevisionNotFoundError:
        existing = set()
    clash = sorted(existing.intersection(PROTECTED_FILES))
    if clash and not force:
        raise FileExistsError(
            f"Hub repo {repo_id}@{revision or 'main'} already has {', '.join(clash)}; pass --force to replace them")
    # huggingface_hub shows its own progress bars while uploading.
    return api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), revision=revision,
        commit_message=commit_message or f'Add {repo_id.split("/")[-1]} weights (eca-timm publish)')
