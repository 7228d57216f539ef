"""The checkpoints ``convert``, ``publish`` and ``release`` take: each file read once (its sha256 and its content),
the state dict timm's loader would pick, the model name checked, and the exact fit a Hub folder needs."""
import argparse
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ..models import MODEL_MODULES, STUDY_MODULES, did_you_mean
from ..models._state_dict import CheckpointMismatchError, StateDict, fit_state_dict

__all__ = ['Checkpoint', 'check_model_name', 'file_sha256', 'fit_exactly', 'read_checkpoint',
           'unreadable_checkpoint']

def unreadable_checkpoint(path: Path, error: BaseException) -> ValueError:
    """The error for a file that is not a readable PyTorch checkpoint (torch.load fails in many ways)."""
    return ValueError(
        f'{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}); pass a train.py output folder, '
        f'a checkpoint (.pth.tar / .pth / .safetensors) or a folder written by `eca-timm convert`')


def file_sha256(path: str) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Checkpoint:
    """A checkpoint file read once: its sha256 and what ``torch.load`` (or safetensors) found in it."""
    path: Path
    sha256: str
    content: Any  # a state dict, or a train.py / official checkpoint dict holding one

    @property
    def meta(self) -> Dict[str, Any]:
        """The top-level non-tensor fields timm's train.py and the official files record (epoch, arch, metric)."""
        return {k: self.content[k] for k in ('epoch', 'arch', 'metric') if k in self.content}

    @property
    def has_ema(self) -> bool:
        return any(self.content.get(k) is not None for k in ('state_dict_ema', 'model_ema'))

    def state_dict(self, use_ema: bool = True) -> StateDict:
        """The state dict timm's ``load_state_dict`` picks (EMA first when ``use_ema``), wrapper prefixes removed."""
        from timm.models import clean_state_dict
        keys = (('state_dict_ema', 'model_ema') if use_ema else ()) + ('state_dict', 'model')
        key = next((k for k in keys if self.content.get(k) is not None), None)
        state_dict = self.content[key] if key else self.content
        if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
            raise unreadable_checkpoint(self.path, TypeError(f'{key or "it"} is not a state dict of tensors'))
        return clean_state_dict(state_dict)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read ``path`` once: sha256 and content (``torch.load(weights_only=True)``, or safetensors by suffix)."""
    path = Path(path)
    data = path.read_bytes()  # FileNotFoundError / IsADirectoryError name the path
    try:
        if path.suffix == '.safetensors':
            from safetensors.torch import load
            content = load(data)
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):  # train.py checkpoints hold their args
                content = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except Exception as e:  # pickle, zip, EOF, KeyError on a text file...
        raise unreadable_checkpoint(path, e) from e
    if not isinstance(content, dict):
        raise unreadable_checkpoint(path, TypeError(f'it holds a {type(content).__name__}, not a dict'))
    return Checkpoint(path, hashlib.sha256(data).hexdigest(), content)


def _eca_models() -> List[str]:
    import timm
    return timm.list_models(module=list(MODEL_MODULES + STUDY_MODULES))


def check_model_name(name: Optional[str], option: str = '--model') -> str:
    """``name`` if it is a registered ECA-Net or study model, else a ValueError naming close matches."""
    known = _eca_models()
    if name not in known:
        raise ValueError(f'{option} {name!r} is not a registered ECA model{did_you_mean(str(name), known, n=3)}; '
                         f'`eca-timm models` lists them')
    return name


def _exact_layers(model: nn.Module) -> List[str]:
    """The classifier and first conv: timm adapts them for pretrained loads, a Hub folder must hold the file's own."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return [layer for layer in (cfg.get('classifier'), cfg.get('first_conv')) if layer]


def _same_layout(fitted: StateDict, model: nn.Module) -> bool:
    """Every tensor has the model's shape, but for the classifier's classes and the first conv's input channels."""
    cfg = model.pretrained_cfg
    free = {f"{cfg.get('classifier')}.weight": 0, f"{cfg.get('classifier')}.bias": 0,
            f"{cfg.get('first_conv')}.weight": 1}
    for k, v in model.state_dict().items():
        if k not in fitted or fitted[k].dim() != v.dim():
            return False
        if any(a != b for d, (a, b) in enumerate(zip(fitted[k].shape, v.shape)) if d != free.get(k)):
            return False
    return True


def _family_of(state_dict: StateDict, not_this: str) -> Optional[str]:
    """The registered ECA model a checkpoint that did not fit ``not_this`` fits (meta-device models: no memory)."""
    import timm
    for name in _eca_models():
        if name != not_this:
            with torch.device('meta'):
                candidate = timm.create_model(name)
            try:
                fitted = fit_state_dict(state_dict, candidate)
            except CheckpointMismatchError:
                continue
            if _same_layout(fitted, candidate):
                return name
    return None


def _has_eca_weights(state_dict: StateDict) -> bool:
    """True when some tensor is an ECA channel conv (``[1, 1, k]``), under the official or timm's key names."""
    return any(k.endswith('.conv.weight') and v.dim() == 3 and v.shape[:2] == (1, 1) for k, v in state_dict.items())


def fit_exactly(state_dict: StateDict, model: nn.Module, src: Path, fix: str) -> StateDict:
    """``state_dict`` remapped to ``model`` so that it loads strictly, or a CheckpointMismatchError saying what the
    file is: another registered model's checkpoint, or a head / first conv of another size (``fix``: what to do)."""
    arch = model.pretrained_cfg.get('architecture') or type(model).__name__
    try:
        fitted = fit_state_dict(state_dict, model)
    except CheckpointMismatchError as e:
        # a file without ECA weights is a plain network: fit_state_dict's own error says so and what to do instead
        family = _family_of(state_dict, arch) if _has_eca_weights(state_dict) else None
        if family is None:
            raise
        raise CheckpointMismatchError(
            f"{src} is a checkpoint of {family}, not of {arch}: it fits timm.create_model('{family}') exactly; pass "
            f"--model {family}") from e
    target = model.state_dict()
    for layer in _exact_layers(model):
        for key in (f'{layer}.weight', f'{layer}.bias'):
            if key not in target:
                continue
            if key not in fitted:
                raise CheckpointMismatchError(f'{src}: the checkpoint has no {key} ({arch} needs it); {fix}')
            theirs, ours = tuple(fitted[key].shape), tuple(target[key].shape)
            if theirs != ours:
                dim, what = (1, 'input channels') if layer == model.pretrained_cfg.get('first_conv') else \
                    (0, 'classes')
                raise CheckpointMismatchError(
                    f"{src}: the checkpoint's {layer} has {theirs[dim]} {what}, the {arch} built here "
                    f"{ours[dim]} ({key}: {list(theirs)} vs {list(ours)}); {fix}")
    return fitted
