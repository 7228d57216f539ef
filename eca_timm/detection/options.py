"""What ``detect train`` accepts: its numeric options checked for type and range (from the command line and from a
recipe alike, before any work), and ``--model-kwargs`` as timm's KEY=VALUE items."""
import argparse
from typing import Any, Dict, Optional, Tuple

from timm.utils import ParseKwargs

__all__ = ['OPTION_RANGES', 'ModelKwargs', 'check_options']

# Each numeric option: its type (list: of ints) and lowest value. 0 epochs would train nothing into a new run folder.
OPTION_RANGES: Dict[str, Tuple[type, int]] = dict(
    epochs=(int, 1), batch_size=(int, 1), lr=(float, 0), lr_base_batch=(int, 1), momentum=(float, 0),
    weight_decay=(float, 0), lr_gamma=(float, 0), warmup_iters=(int, 0), warmup_factor=(float, 0), workers=(int, 0),
    log_interval=(int, 1), eval_interval=(int, 0), seed=(int, 0), min_size=(int, 1), max_size=(int, 1),
    lr_steps=(list, 0))
_WHAT = {int: 'an int >= {}', float: 'a number >= {}', list: 'a list of ints >= {}'}


def _fits(value: Any, kind: type, lowest: int) -> bool:
    if kind is list:
        return isinstance(value, list) and all(_fits(v, int, lowest) for v in value)
    return type(value) in ((int,) if kind is int else (int, float)) and value >= lowest  # NaN is not >= lowest


def check_options(args: argparse.Namespace) -> None:
    """A ValueError naming every option of the wrong type or range (a recipe's values never pass argparse)."""
    problems = [f"{name} must be {_WHAT[kind].format(lowest)} (--{name.replace('_', '-')}, or a recipe's {name}), "
                f"got {getattr(args, name)!r}"
                for name, (kind, lowest) in OPTION_RANGES.items() if not _fits(getattr(args, name), kind, lowest)]
    if not isinstance(args.model_kwargs, dict):
        problems.append(f'model_kwargs must be a mapping of detector arguments, got {args.model_kwargs!r}')
    if problems:
        raise ValueError('; '.join(problems))


class ModelKwargs(ParseKwargs):
    """timm's KEY=VALUE parser (values read as Python literals, else kept as text); an item without ``=`` or with a
    key that is no name is a usage error (timm's raises a bare unpacking ValueError)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        for value in values:
            key, equals, _ = value.partition('=')
            if value and not (equals and key.isidentifier()):
                raise argparse.ArgumentError(self, f'expected KEY=VALUE items (e.g. fpn_channels=64), got {value!r}')
        super().__call__(parser, namespace, values, option_string)
