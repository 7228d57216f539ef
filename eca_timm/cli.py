"""The ``eca-timm`` command line: one subcommand per module, each registering its own parser."""
import argparse
import sys
from typing import List, Optional

from . import bench, model_table

COMMANDS = (model_table, bench)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='eca-timm', description='ECA-Net models for timm.')
    subparsers = parser.add_subparsers(dest='command', required=True)
    for module in COMMANDS:
        module.register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
