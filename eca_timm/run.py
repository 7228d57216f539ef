"""``python -m eca_timm.run SCRIPT ARGS...`` (also under ``torchrun -m``): timm's scripts with the ECA models
registered. The same command as ``eca-timm run`` (``eca_timm.train.run``), with its one-line errors."""
import sys

from .cli import console

if __name__ == '__main__':
    sys.exit(console(['run', *sys.argv[1:]]))
