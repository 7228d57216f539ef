"""Pretrained tags from ``hub/manifest.json``, and the error ``pretrained=True`` raises when weights cannot load.

``hub/manifest.json`` (shipped in the wheel as ``eca_timm.hub_data``) is the one table of pretrained tags: repo
name, dataset, license, source checkpoint (file, sha256) and metrics. The registry's pretrained cfgs
(``hf_hub_id``, metrics in ``description``) are generated from it here, the model cards in ``weights/``. The Hub
organisation is the manifest's ``org``, overridden by the ``ECA_TIMM_HUB_ORG`` environment variable (read when the
registry is built, at ``import eca_timm``).
"""
import functools
import json
import os
import pickle
from typing import Any, Dict, Iterable, Optional, Tuple

from .._resources import HUB_DATA, data_file

__all__ = ['HUB_ORG_ENV', 'LOAD_ERRORS', 'fail_fast_offline', 'hub_data', 'hub_org', 'hub_unreachable', 'is_published',
           'load_manifest', 'manifest_entry', 'metrics_line', 'pretrained_cfgs', 'pretrained_load_error', 'repo_id']

HUB_ORG_ENV = 'ECA_TIMM_HUB_ORG'


def hub_data() -> Any:
    """The packaged ``hub/`` folder (``eca_timm.hub_data``) as an ``importlib.resources`` Traversable."""
    return data_file(HUB_DATA)


@functools.lru_cache(maxsize=None)
def load_manifest() -> Dict[str, Any]:
    """The parsed ``hub/manifest.json``."""
    return json.loads((hub_data() / 'manifest.json').read_text(encoding='utf-8'))


def hub_org() -> str:
    """Hub organisation of the pretrained tags: ``$ECA_TIMM_HUB_ORG``, else the manifest's ``org``."""
    return os.environ.get(HUB_ORG_ENV) or load_manifest()['org']


def manifest_entry(model_tag: str) -> Optional[Dict[str, Any]]:
    """The manifest entry of ``'<model>.<tag>'``, or None."""
    return load_manifest()['weights'].get(model_tag)


def repo_id(model_tag: str) -> str:
    """Hub repo id of ``'<model>.<tag>'``: ``<org>/<manifest repo>`` (the tag itself when not listed); a manifest
    repo given as ``ORG/NAME`` is used as is."""
    repo = (manifest_entry(model_tag) or {}).get('repo', model_tag)
    return repo if '/' in repo else f'{hub_org()}/{repo}'


def is_published(model_tag: str) -> bool:
    """Whether ``'<model>.<tag>'`` has weights on the Hub: the manifest says so (``published``), or
    ``$ECA_TIMM_HUB_ORG`` names an organisation that published the tags itself."""
    return bool((manifest_entry(model_tag) or {}).get('published')) or bool(os.environ.get(HUB_ORG_ENV))


def metrics_line(metrics: Dict[str, Any]) -> str:
    return f"top-1 {metrics['top1']:.2f}, top-5 {metrics['top5']:.2f}"


def pretrained_cfgs(architectures: Iterable[str]) -> Dict[str, Dict[str, Any]]:
    """Manifest tags of ``architectures`` as timm pretrained cfg fields, keyed ``'<model>.<tag>'``.

    Only published tags get an ``hf_hub_id``: the others stay registered (their data config, ``pretrained_cfg_overlay=
    dict(file=...)``) but ``timm.list_pretrained()`` does not advertise them. Architectures without a tag get an
    untagged entry, so timm still finds their data config.
    """
    architectures = list(architectures)
    cfgs: Dict[str, Dict[str, Any]] = {}
    for model_tag, entry in load_manifest()['weights'].items():
        arch = model_tag.split('.', 1)[0]
        if arch not in architectures:
            continue
        cfg: Dict[str, Any] = {'hf_hub_id': repo_id(model_tag)} if is_published(model_tag) else {}
        if entry.get('license'):
            cfg['license'] = entry['license']
        if entry.get('metrics'):
            cfg['description'] = f"{entry.get('dataset', '')} {metrics_line(entry['metrics'])}".strip()
            cfg['notes'] = (entry['metrics']['provenance'],)
        cfgs[model_tag] = cfg
    for arch in architectures:
        if not any(k.split('.', 1)[0] == arch for k in cfgs):
            cfgs[arch] = {}
    return cfgs


LOAD_ERRORS: Tuple[type, ...] = (OSError, EOFError, RuntimeError, pickle.UnpicklingError)
try:
    from safetensors import SafetensorError
    LOAD_ERRORS += (SafetensorError,)
except ImportError:  # pragma: no cover
    pass


def _resolve_source(variant: str, kwargs: Dict[str, Any]) -> Tuple[Any, str, Any]:
    """timm's pretrained cfg of ``variant`` (with the call's overrides), where it loads from, and the location."""
    from timm.models._builder import _resolve_pretrained_source, resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    load_from, loc = _resolve_pretrained_source(cfg.to_dict())
    return cfg, load_from, loc


def hub_unreachable(error: BaseException) -> bool:
    """True for the transport errors huggingface_hub lets through when the Hub cannot be reached."""
    kinds = [ConnectionError, TimeoutError]
    for module, names in (('httpx2', ('TransportError',)), ('httpx', ('TransportError',)),
                          ('requests', ('ConnectionError', 'Timeout')),
                          ('huggingface_hub.errors', ('OfflineModeIsEnabled',))):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        kinds += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return isinstance(error, tuple(kinds))


def fail_fast_offline(variant: str, kwargs: Dict[str, Any]) -> None:
    """Before timm downloads Hub weights that are not in the local Hub cache, ask the Hub for them once through
    huggingface_hub (its HTTP session honours proxies and certificates), without its retries: a Hub that cannot be
    reached is an error now, not after about 25 s of retries. ``HF_HUB_OFFLINE=1`` fails at once anyway."""
    import huggingface_hub
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return
    cfg, load_from, loc = _resolve_source(variant, kwargs)
    if load_from != 'hf-hub':
        return
    repo = loc[0] if isinstance(loc, tuple) else loc
    repo_id, _, revision = repo.partition('@')
    if any(isinstance(huggingface_hub.try_to_load_from_cache(repo_id, f, revision=revision or None), str)
           for f in ('model.safetensors', 'pytorch_model.bin')):
        return
    url = huggingface_hub.hf_hub_url(repo_id, 'model.safetensors', revision=revision or None)
    try:
        huggingface_hub.get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as e:  # a missing repo or file: timm's own download says so (pretrained_load_error)
        if not hub_unreachable(e):
            return
        name = f'{variant}.{cfg.tag}' if cfg.tag else variant
        raise RuntimeError(
            f"{name}: the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached (offline?) and repo '{repo}' is "
            f"not in the local Hub cache ({type(e).__name__}: {e}). Set HF_HUB_OFFLINE=1 to skip the network (it "
            f"then fails at once), load a file with pretrained_cfg_overlay=dict(file=...), or a converted folder "
            f"with timm.create_model('local-dir:DIR').") from e


def pretrained_load_error(variant: str, kwargs: Dict[str, Any], error: BaseException) -> RuntimeError:
    """An error naming where ``pretrained=True`` looked for weights and what to do about it."""
    cfg, load_from, loc = _resolve_source(variant, kwargs)
    name = f'{variant}.{cfg.tag}' if cfg.tag else variant
    cause = f'{type(error).__name__}: {" ".join(str(error).split())}'.strip()
    if load_from == 'hf-hub':
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
        repo = loc[0] if isinstance(loc, tuple) else loc
        not_found = isinstance(error, (RepositoryNotFoundError, EntryNotFoundError))
        if not_found and not isinstance(error, FileNotFoundError):  # LocalEntryNotFoundError: offline, not cached
            why = f'the repo or its weights are not on the Hub (not published yet, or set {HUB_ORG_ENV} to the ' \
                  f'organisation that has them)'
        elif isinstance(error, (ConnectionError, FileNotFoundError)):
            why = 'the Hub cannot be reached (offline?) and the files are not in the local Hub cache (HF_HUB_CACHE)'
        else:
            why = f"the downloaded weights are unreadable (corrupt?): delete models--{repo.replace('/', '--')} " \
                  f"from the Hub cache and retry"
        src = ((manifest_entry(name) or {}).get('source') or {}).get('file', 'CHECKPOINT')
        return RuntimeError(
            f"{name}: no usable pretrained weights from Hugging Face Hub repo '{repo}': {why} ({cause}). "
            f"To make them: `eca-timm convert {src} --model {variant} --out DIR`, then "
            f"`eca-timm publish DIR --repo-id {repo}`; or load a file directly with "
            f"pretrained_cfg_overlay=dict(file='{src}'), or a converted folder with "
            f"timm.create_model('local-dir:DIR').")
    entry = manifest_entry(name)
    if not load_from and entry is not None:  # a manifest tag whose weights are not published yet
        src = (entry.get('source') or {}).get('file', 'CHECKPOINT')
        where = (entry.get('source') or {}).get('url', 'its release page')
        return RuntimeError(
            f"{name}: these weights are not published on the Hugging Face Hub yet (eca-timm's manifest; `eca-timm "
            f"models` lists the tags). Load the "
            f"release file directly: timm.create_model('{variant}', pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='{src}')) (download it from {where}), or convert it once with "
            f"`eca-timm convert {src} --model {variant} --out DIR` and use timm.create_model('local-dir:DIR').")
    return RuntimeError(
        f"{name}: could not load pretrained weights from {load_from or 'nowhere'} {loc!r} ({cause}). "
        f"Pass a readable checkpoint (pretrained_cfg_overlay=dict(file=...)), a converted folder "
        f"('local-dir:DIR'), or pretrained=False.")
