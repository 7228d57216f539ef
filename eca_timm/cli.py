"""The ``eca-timm`` command line: one subcommand per command module, each registering its own parser.

``main`` runs a command and lets its exceptions through (the Python entry, and what tests call); ``console`` is the
``eca-timm`` executable: a user error (a ``ValueError`` or ``OSError``: bad input, a missing or unreadable file, no
network) becomes one line ``eca-timm <command>: error: <what and how to fix>`` and exit status 2, with the traceback
only under ``--debug``.
"""
import argparse
import logging
import re
import sys
from typing import Iterator, List, Optional, Tuple

from . import bench, model_table
from ._version import __version__
from .detection import command as detection_command
from .train import quickstart, run, scripts, study
from .weights import convert, publish, release

COMMANDS = (model_table, run, scripts, study, quickstart, convert, publish, release, bench, detection_command)
# What a command raises for bad input (ImportError: an optional extra such as pycocotools is missing).
USER_ERRORS: Tuple[type, ...] = (ValueError, OSError, ImportError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (paragraphs kept), and every option's default shown unless its help gives it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ''
        if action.default in (None, argparse.SUPPRESS) or 'default' in help_text.lower():
            return help_text
        return super()._get_help_string(action)


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse._SubParsersAction]:
    return (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _finish_help(parser: argparse.ArgumentParser) -> None:
    """Every subcommand, nested ones too, gets the help formatter and a plain-text description (its one-line help
    where the module gave none; docstring markup such as ``code`` shown as 'code')."""
    for group in _subparsers(parser):
        helps = {a.dest: a.help for a in group._choices_actions}
        for name, sub in group.choices.items():
            sub.formatter_class = HelpFormatter
            sub.set_defaults(command_name=sub.prog.split(' ', 1)[-1])  # 'detect train': the deepest parser wins
            description = sub.description or helps.get(name) or ''
            sub.description = re.sub(r'``([^`]+)``', r"'\1'", description)
            _finish_help(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``eca-timm`` parser with every subcommand registered."""
    import timm
    import torch
    parser = argparse.ArgumentParser(
        prog='eca-timm', formatter_class=HelpFormatter,
        description='ECA-Net models for timm: list them, train and evaluate with timm\'s own scripts, run the '
                    'attention study, convert and publish weights, benchmark, and train detectors.')
    parser.add_argument('--version', action='version',
                        version=f'eca-timm {__version__} (timm {timm.__version__}, torch {torch.__version__})')
    parser.add_argument('--debug', action='store_true',
                        help='show the full traceback of an error instead of its one-line message')
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for module in COMMANDS:
        module.register(subparsers)
    _finish_help(parser)
    return parser


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, 'accepts_extra_args', False):
        parser.error(f'unrecognized arguments: {" ".join(extra)}')
    args.extra = extra  # a subcommand that passes arguments on (study -> train.py) sets accepts_extra_args
    return args


def _run(args: argparse.Namespace) -> int:
    from timm.utils import setup_default_logging
    if not logging.root.handlers:  # once, here: INFO messages of every command reach the terminal
        setup_default_logging()
    return args.func(args)


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``eca-timm ARGV``; exceptions propagate (``console`` is the executable that reports them)."""
    return _run(_parse(argv))


def error_line(error: BaseException) -> str:
    """An exception as one line of text."""
    text = ' '.join(str(error).split()) or type(error).__name__
    return text if not isinstance(error, ImportError) else f'{text} (install the extra that provides it)'


def console(argv: Optional[List[str]] = None) -> int:
    """The ``eca-timm`` executable: user errors as one line and exit status 2 (tracebacks with ``--debug``)."""
    args = _parse(argv)
    try:
        return _run(args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f'eca-timm {getattr(args, "command_name", args.command)}: error: {error_line(e)}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(console())
