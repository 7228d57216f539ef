"""The ``eca-timm`` command line: one subcommand per module, each registering its own parser."""
import argparse
import sys
from typing import List, Optional

from . import bench, model_table
from .detection import command as detection_command
from .train import quickstart, run, study
from .weights import convert, publish

COMMANDS = (model_table, run, study, quickstart, convert, publish, bench, detection_command)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='eca-timm', description='ECA-Net models for timm.')
    subparsers = parser.add_subparsers(dest='command', required=True)
    for module in COMMANDS:
        module.register(subparsers)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, 'accepts_extra_args', False):
        parser.error(f'unrecognized arguments: {" ".join(extra)}')
    args.extra = extra  # a subcommand that passes arguments on (study -> train.py) sets accepts_extra_args
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
