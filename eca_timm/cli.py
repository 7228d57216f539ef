"""The ``eca-timm`` command line: one subcommand per command module, each registering its own parser.

``main`` runs a command and lets its exceptions through (the Python entry, and what tests call); ``console`` is the
``eca-timm`` executable: a user error (a ``ValueError``, ``OSError`` or ``ImportError``: bad input, a missing or
unreadable file, no network, a missing extra) becomes one line ``eca-timm <command>: error: <what and how to fix>``
and exit status 2, and Ctrl-C one line ``eca-timm <command>: interrupted`` and exit status 130 (what the command
kept or left untouched, where it says so with ``set_defaults(interrupted_note=...)``); the traceback only under
``--debug``. Commands print nothing of their own for these: this is the one error path.
"""
import argparse
import logging
import sys
from typing import Iterator, List, Optional, Tuple

from . import bench, model_table
from ._version import __version__
from .detection import command as detection_command
from .train import plot, quickstart, run, scripts, study
from .weights import convert, publish, release

COMMANDS = (model_table, run, scripts, study, plot, quickstart, convert, publish, release, bench, detection_command)
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
    """Every subcommand, nested ones too, gets the help formatter and a description (its one-line help where the
    module gave none)."""
    for group in _subparsers(parser):
        helps = {a.dest: a.help for a in group._choices_actions}
        for name, sub in group.choices.items():
            sub.formatter_class = HelpFormatter
            sub.set_defaults(command_name=sub.prog.split(' ', 1)[-1])  # 'detect train': the deepest parser wins
            sub.description = sub.description or helps.get(name) or ''
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
    # once, here: INFO messages of every command reach the terminal (timm's scripts set up their own)
    if not logging.root.handlers and not getattr(args, 'configures_logging', False):
        setup_default_logging()
    return args.func(args)


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``eca-timm ARGV``; exceptions propagate (``console`` is the executable that reports them)."""
    return _run(_parse(argv))


def error_line(error: BaseException) -> str:
    """An exception as one line of text."""
    text = ' '.join(str(error).split()) or type(error).__name__
    if isinstance(error, ImportError) and 'pip install' not in text:
        return f'{text} (install the extra that provides it)'
    return text


def console(argv: Optional[List[str]] = None) -> int:
    """The ``eca-timm`` executable: user errors as one line and exit status 2, Ctrl-C as one line and exit status
    130 (tracebacks with ``--debug``)."""
    run.die_with_parent()  # a child of an eca-timm command (the study's trainers) ends with it
    try:
        args = _parse(argv)
    except KeyboardInterrupt:
        print('eca-timm: interrupted', file=sys.stderr)
        return 130
    command = f'eca-timm {getattr(args, "command_name", args.command)}'
    try:
        return _run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        note = getattr(args, 'interrupted_note', None)
        print(f'{command}: interrupted' + (f'; {note}' if note else ''), file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f'{command}: error: {error_line(e)}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(console())
