"""Model cards of published weights: YAML metadata, model details and stats, usage, results, recipe, citation."""
import copy
import string
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..models._pretrained import hub_data

__all__ = ['RECIPE_KEYS', 'effective_recipe', 'render_model_card']

# train.py arguments a card lists under "Training recipe" (from args.yaml).
RECIPE_KEYS = (
    'pretrained_path', 'initial_checkpoint', 'epochs', 'batch_size', 'opt', 'lr', 'lr_base', 'momentum', 'weight_decay', 'sched', 'warmup_epochs', 'decay_epochs',
    'decay_rate', 'smoothing', 'aa', 'mixup', 'cutmix', 'drop', 'drop_path', 'model_ema', 'model_ema_decay',
    'reprob', 'amp', 'img_size', 'input_size', 'seed')


def _in_chans(model: nn.Module) -> int:
    """Input channels, read off the first conv (its weight is [out, in, kh, kw])."""
    first = (getattr(model, 'pretrained_cfg', None) or {}).get('first_conv')
    try:
        return int(model.get_submodule(first).weight.shape[1]) if first else 3
    except AttributeError:
        return 3


def _compute(model: nn.Module, img_size: int) -> Tuple[int, float]:
    """Parameters and GMACs of ``model`` at ``img_size`` (torch's FlopCounterMode on a meta-device copy)."""
    from torch.utils.flop_counter import FlopCounterMode
    params = sum(p.numel() for p in model.parameters())
    meta = copy.deepcopy(model).to('meta').eval()
    in_chans = _in_chans(model)
    with FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, in_chans, img_size, img_size, device='meta'))
    return params, counter.get_total_flops() / 2e9


def _card_metadata(name: str, license: str, dataset: Optional[str], metrics: Optional[Dict[str, Any]], eca: bool,
                   base_model: Optional[str]) -> str:
    """The card's YAML front matter, from huggingface_hub's ``ModelCardData`` (the model-index from ``EvalResult``)."""
    from huggingface_hub import EvalResult, ModelCardData
    eval_results = None
    if metrics:
        eval_results = [EvalResult(
            task_type='image-classification', task_name='Image Classification', dataset_type=dataset or 'custom',
            dataset_name=dataset or 'custom', dataset_split='validation', metric_type='accuracy',
            metric_name=f'Top-{k} Accuracy', metric_value=float(metrics[f'top{k}'])) for k in (1, 5)]
    data = ModelCardData(
        library_name='timm', pipeline_tag='image-classification', license=license,
        tags=['image-classification', 'timm', 'eca-timm'] + (['eca-net'] if eca else []),
        datasets=[dataset] if dataset else None, base_model=base_model,
        model_name=name if eval_results else None, eval_results=eval_results)
    return data.to_yaml() + '\n'


def effective_recipe(recipe: Dict[str, Any]) -> Dict[str, Any]:
    """The ``RECIPE_KEYS`` of args.yaml that took effect in train.py: no ``lr_base`` when ``lr`` was given, no
    step-schedule keys under another schedule, no EMA decay without EMA, no unset values."""
    out = {k: recipe[k] for k in RECIPE_KEYS if recipe.get(k) not in (None, '')}
    if out.get('lr') is not None:
        out.pop('lr_base', None)
    if out.get('sched') not in ('step', 'multistep'):
        out.pop('decay_epochs', None)
        if out.get('sched') != 'plateau':  # plateau decays by decay_rate too
            out.pop('decay_rate', None)
    if not out.get('model_ema'):
        out.pop('model_ema_decay', None)
    for k in ('mixup', 'cutmix', 'reprob', 'drop', 'drop_path', 'smoothing'):
        if out.get(k) == 0:
            out.pop(k)
    return out


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
        base_model: Optional[str] = None,
) -> str:
    """The README.md of a Hub repo, from ``hub/model_card.md``: YAML metadata, details, usage, results, citation."""
    cfg = model.pretrained_cfg
    input_size = tuple(input_size or cfg.get('input_size', (3, 224, 224)))
    params, gmacs = _compute(model, input_size[-1])
    name = repo_id.split('/')[-1]
    if recipe:
        recipe_md = '\n'.join(f'- {k}: `{v}`' for k, v in effective_recipe(recipe).items())
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
    eca = bool(getattr(model, 'eca_kernel_sizes', None))
    if eca:
        description = (
            f'ECA-Net image classification weights for `{cfg.get("architecture")}`, for timm via the `eca_timm` '
            f'plugin. ECA (Efficient Channel Attention) gates each residual block\'s channels with a 1-D convolution '
            f'over the pooled channel descriptor.')
    else:
        description = (
            f'Image classification weights for `{cfg.get("architecture")}`, a baseline of the eca-timm attention '
            f'study (no ECA), for timm via the `eca_timm` plugin.')
    template = string.Template((hub_data() / 'model_card.md').read_text(encoding='utf-8'))
    return template.substitute(
        metadata=_card_metadata(name, license, dataset, metrics, eca, base_model), repo_name=name, repo_id=repo_id,
        description=description, architecture=cfg.get('architecture'),
        kernel_sizes=', '.join(map(str, getattr(model, 'eca_kernel_sizes', ()))) or 'none (a study baseline)',
        params_m=f'{params / 1e6:.2f}',
        gmacs=f'{gmacs:.2f}', img_size=input_size[-1], input_size=' x '.join(map(str, input_size)),
        num_classes=model.num_classes, dataset=dataset or 'custom', source=src, recipe=recipe_md, results=results,
        img_mode='L' if _in_chans(model) == 1 else 'RGB')
