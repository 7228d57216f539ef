"""Model cards of published weights: YAML metadata, model details and stats, usage, results, recipe, citation."""
import copy
import string
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..models._pretrained import hub_data

__all__ = ['RECIPE_KEYS', 'render_model_card']

# train.py arguments a card lists under "Training recipe" (from args.yaml).
RECIPE_KEYS = (
    'pretrained_path', 'initial_checkpoint', 'epochs', 'batch_size', 'opt', 'lr', 'lr_base', 'momentum', 'weight_decay', 'sched', 'warmup_epochs', 'decay_epochs',
    'decay_rate', 'smoothing', 'aa', 'mixup', 'cutmix', 'drop', 'drop_path', 'model_ema', 'model_ema_decay',
    'reprob', 'amp', 'img_size', 'input_size', 'seed')


def _compute(model: nn.Module, img_size: int) -> Tuple[int, float]:
    """Parameters and GMACs of ``model`` at ``img_size`` (torch's FlopCounterMode on a meta-device copy)."""
    from torch.utils.flop_counter import FlopCounterMode
    params = sum(p.numel() for p in model.parameters())
    meta = copy.deepcopy(model).to('meta').eval()
    in_chans = getattr(model, 'in_chans', 3)
    with FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, in_chans, img_size, img_size, device='meta'))
    return params, counter.get_total_flops() / 2e9


def _card_metadata(name: str, license: str, dataset: Optional[str], metrics: Optional[Dict[str, Any]]) -> str:
    import yaml
    meta: Dict[str, Any] = {
        'tags': ['image-classification', 'timm', 'eca-timm', 'eca-net'],
        'library_name': 'timm', 'pipeline_tag': 'image-classification', 'license': license,
    }
    if dataset:
        meta['datasets'] = [dataset]
    if metrics:
        meta['model-index'] = [{'name': name, 'results': [{
            'task': {'type': 'image-classification', 'name': 'Image Classification'},
            'dataset': {'type': dataset or 'custom', 'name': dataset or 'custom', 'split': 'validation'},
            'metrics': [
                {'type': 'accuracy', 'name': 'Top-1 Accuracy', 'value': float(metrics['top1'])},
                {'type': 'accuracy', 'name': 'Top-5 Accuracy', 'value': float(metrics['top5'])},
            ],
        }]}]
    return yaml.safe_dump(meta, sort_keys=False)


def render_model_card(
        model: nn.Module,
        repo_id: str,
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        license: str = 'mit',
        source: Optional[Dict[str, Any]] = None,
        recipe: Optional[Dict[str, Any]] = None,
        recipe_text: Optional[str] = None,
        results_note: Optional[str] = None,
        input_size: Optional[Tuple[int, int, int]] = None,
) -> str:
    """The README.md of a Hub repo, from ``hub/model_card.md``: YAML metadata, details, usage, results, citation."""
    cfg = model.pretrained_cfg
    input_size = tuple(input_size or cfg.get('input_size', (3, 224, 224)))
    params, gmacs = _compute(model, input_size[-1])
    name = repo_id.split('/')[-1]
    if recipe:
        recipe_md = '\n'.join(f'- {k}: `{recipe[k]}`' for k in RECIPE_KEYS if recipe.get(k) not in (None, ''))
        recipe_md = f'timm `train.py` arguments (from args.yaml):\n\n{recipe_md}'
    else:
        recipe_md = recipe_text or 'Not recorded.'
    if metrics:
        results = (
            f"| dataset | top-1 | top-5 | provenance |\n|---|---:|---:|---|\n"
            f"| {dataset or 'custom'} (validation) | {float(metrics['top1']):.2f} | {float(metrics['top5']):.2f} "
            f"| {metrics.get('provenance', '')} |")
    else:
        results = results_note or 'No evaluation results recorded for these weights.'
    src = 'trained with timm `train.py`'
    if source:
        src = f"`{source.get('file', '?')}`" + (f" (sha256 `{source['sha256']}`)" if source.get('sha256') else '')
        src += f", {source['url']}" if source.get('url') else ''
    description = (
        f'ECA-Net image classification weights for `{model.pretrained_cfg.get("architecture")}`, for timm via the '
        f'`eca_timm` plugin. ECA (Efficient Channel Attention) gates each residual block\'s channels with a 1-D '
        f'convolution over the pooled channel descriptor.')
    template = string.Template((hub_data() / 'model_card.md').read_text(encoding='utf-8'))
    return template.substitute(
        metadata=_card_metadata(name, license, dataset, metrics), repo_name=name, repo_id=repo_id,
        description=description, architecture=cfg.get('architecture'),
        kernel_sizes=', '.join(map(str, getattr(model, 'eca_kernel_sizes', ()))) or 'none (a study baseline)',
        params_m=f'{params / 1e6:.2f}',
        gmacs=f'{gmacs:.2f}', img_size=input_size[-1], input_size=' x '.join(map(str, input_size)),
        num_classes=model.num_classes, dataset=dataset or 'custom', source=src, recipe=recipe_md, results=results)
