"""Model cards of published weights: what a Hub folder says about its weights (``WeightsInfo``), rendered from
``hub/model_card.md`` with huggingface_hub's ``ModelCard.from_template`` (metadata from ``ModelCardData``)."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from torch import nn

from .._measure import params_and_flops
from .._resources import HUB_DATA, data_path
from ..models import did_you_mean

__all__ = ['HUB_LICENSES', 'RECIPE_KEYS', 'WeightsInfo', 'check_card_fields', 'effective_recipe',
           'render_model_card']

# train.py arguments a card lists under "Training recipe" (from args.yaml).
RECIPE_KEYS = (
    'pretrained_path', 'initial_checkpoint', 'epochs', 'batch_size', 'opt', 'lr', 'lr_base', 'momentum', 'weight_decay',
    'sched', 'warmup_epochs', 'decay_epochs', 'decay_rate', 'smoothing', 'aa', 'mixup', 'cutmix', 'drop', 'drop_path',
    'model_ema', 'model_ema_decay', 'reprob', 'amp', 'img_size', 'input_size', 'seed')

# The license identifiers a Hub card takes (huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset((
    'apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m '
    'afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 '
    'cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 '
    'cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 '
    'cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 agpl-3.0 gfdl gpl '
    'gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql '
    'ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license llama2 gemma unknown other').split())


@dataclass
class WeightsInfo:
    """What a Hub folder says about its weights: its card, config.json's pretrained cfg, its manifest entry."""
    tag: Optional[str] = None  # the pretrained tag: timm lists the weights as <architecture>.<tag>
    license: str = 'mit'
    dataset: Optional[str] = None  # Hub dataset id of the training and evaluation data
    eval_split: str = 'validation'  # the split of ``dataset`` the metrics were measured on
    data_note: Optional[str] = None  # what the data was beyond its name: subset, image counts
    metrics: Optional[Dict[str, Any]] = None  # top1, top5, provenance: measured on exactly these weights
    results_note: Optional[str] = None  # the Results section when there are no metrics
    source: Dict[str, Any] = field(default_factory=dict)  # the source checkpoint: file, sha256, url
    recipe: Optional[Dict[str, Any]] = None  # train.py's args.yaml (local paths reduced to file names)
    recipe_text: Optional[str] = None  # the recipe in words, when there is no args.yaml
    intended_use: Optional[str] = None  # the intended use / limitations paragraph (default: from the fields)
    base_model: Optional[str] = None  # the Hub repo training started from
    label_names: Optional[List[str]] = None
    data_config: Optional[Dict[str, Any]] = None  # timm's preprocessing of these weights (args.yaml's)


def _in_chans(model: nn.Module) -> int:
    """Input channels, read off the first conv (its weight is [out, in, kh, kw])."""
    first = (getattr(model, 'pretrained_cfg', None) or {}).get('first_conv')
    try:
        return int(model.get_submodule(first).weight.shape[1]) if first else 3
    except AttributeError:
        return 3


def check_card_fields(dataset: Optional[str], license: Optional[str], origin: str = '--dataset') -> None:
    """Refuse a dataset id or license the card metadata cannot carry (a YAML injection, a typo) before any work."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    if dataset is not None:
        try:
            validate_repo_id(dataset)
        except HFValidationError as e:
            raise ValueError(f'{origin} {dataset!r} is not a Hub dataset id (NAME or ORG/NAME, e.g. cifar10 or '
                             f'zalando-datasets/fashion_mnist): {" ".join(str(e).split())}') from e
    if license is not None and license not in HUB_LICENSES:
        raise ValueError(f'--license {license!r} is not a license identifier the Hub knows'
                         + did_you_mean(license, HUB_LICENSES, n=3)
                         + '; see huggingface.co/docs/hub/repositories-licenses, or pass other')


def _card_data(name: str, info: WeightsInfo, eca: bool) -> Any:
    """huggingface_hub's ``ModelCardData``: the model-index comes from ``EvalResult``s of the weights' own metrics."""
    from huggingface_hub import EvalResult, ModelCardData
    eval_results = None
    if info.metrics:
        dataset = info.dataset or 'custom'
        eval_results = [EvalResult(
            task_type='image-classification', task_name='Image Classification', dataset_type=dataset,
            dataset_name=dataset, dataset_split=info.eval_split, metric_type='accuracy',
            metric_name=f'Top-{k} Accuracy', metric_value=float(info.metrics[f'top{k}'])) for k in (1, 5)]
    return ModelCardData(
        library_name='timm', pipeline_tag='image-classification', license=info.license,
        tags=['image-classification', 'timm', 'eca-timm'] + (['eca-net'] if eca else []),
        datasets=[info.dataset] if info.dataset else None, base_model=info.base_model,
        model_name=name if eval_results else None, eval_results=eval_results)


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


def _intended_use(model: nn.Module, info: WeightsInfo, size: str) -> str:
    classes = f'the {model.num_classes} classes of {info.dataset}' if info.dataset else \
        f'{model.num_classes} classes (the card does not name the data)'
    measured = (f'the results below hold for {info.dataset or "the evaluation data"} ({info.eval_split}) at {size}, '
                f'not for other data' if info.metrics else 'no results are recorded for these weights')
    return (f'Image classification into {classes}, and a backbone for feature extraction or fine-tuning (see Model '
            f'Usage). Limitations: the weights know only what their training data shows (its classes, image styles '
            f'and biases); {measured}. Check them on your own data before relying on them.')


def render_model_card(model: nn.Module, repo_id: str, info: WeightsInfo, local_dir: Optional[str] = None) -> str:
    """The README.md of a Hub repo, from ``hub/model_card.md``: metadata, details, intended use, recipe, usage,
    results, citation. ``local_dir``: the folder is not on the Hub yet; its usage loads it from there."""
    from huggingface_hub import ModelCard
    cfg = model.pretrained_cfg
    input_size = tuple((info.data_config or {}).get('input_size') or cfg.get('input_size', (3, 224, 224)))
    in_chans = _in_chans(model)
    params, flops = params_and_flops(model, (in_chans, *input_size[1:]))
    name = repo_id.split('/')[-1]
    if info.recipe:
        recipe_md = '\n'.join(f'- {k}: `{v}`' for k, v in effective_recipe(info.recipe).items())
        recipe_md = f'timm `train.py` arguments (from args.yaml):\n\n{recipe_md}'
    else:
        recipe_md = info.recipe_text or 'Not recorded.'
    dataset = info.dataset or 'custom'
    if info.metrics:
        results = (
            f"| dataset | top-1 | top-5 | provenance |\n|---|---:|---:|---|\n"
            f"| {dataset} ({info.eval_split}) | {float(info.metrics['top1']):.2f} | "
            f"{float(info.metrics['top5']):.2f} | {info.metrics.get('provenance', '')} |")
    else:
        results = info.results_note or 'No evaluation results recorded for these weights.'
    source = info.source or {}
    src = f"`{source.get('file', '?')}`" if source else 'trained with timm `train.py`'
    src += f" (sha256 `{source['sha256']}`)" if source.get('sha256') else ''
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
    size = ' x '.join(map(str, input_size[1:]))
    with data_path(HUB_DATA, 'model_card.md') as template:
        card = ModelCard.from_template(
            _card_data(name, info, eca), template_path=str(template), repo_name=name, description=description,
            architecture=cfg.get('architecture'),
            kernel_sizes=', '.join(map(str, getattr(model, 'eca_kernel_sizes', ()))) or 'none (a study baseline)',
            params_m=f'{params / 1e6:.2f}', gmacs=f'{flops / 2e9:.2f}', img_size=input_size[-1],
            input_size=' x '.join(map(str, input_size)), num_classes=model.num_classes,
            data=(info.dataset or 'not recorded') + (f' ({info.data_note})' if info.data_note else ''),
            source=src, recipe=recipe_md, results=results,
            intended_use=info.intended_use or _intended_use(model, info, size),
            local_dir=local_dir, timm_id=f'local-dir:{local_dir}' if local_dir else f'hf-hub:{repo_id}',
            hf_id=local_dir or repo_id, in_chans=in_chans, img_mode='L' if in_chans == 1 else 'RGB')
    return str(card)
