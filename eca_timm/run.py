"""``python -m eca_timm.run SCRIPT ARGS...`` (also under ``torchrun -m``): timm's scripts with the ECA models
registered. The runner lives in ``eca_timm.train.run``; this module keeps the short entry point."""
import sys

from .train.run import main

if __name__ == '__main__':
    sys.exit(main())
