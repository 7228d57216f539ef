"""Project folders that ship inside the wheel as data packages (hub/, train_configs/)."""
import importlib.resources
from pathlib import Path


def checkout_dir(folder: str) -> Path:
    """``folder`` of the source checkout this package runs from (absent in a wheel install)."""
    return Path(__file__).resolve().parent.parent / folder


def project_dir(package: str, folder: str) -> Path:
    """``folder`` of the source checkout this package runs from, else its packaged copy ``package`` (a wheel)."""
    checkout = checkout_dir(folder)
    if checkout.is_dir():
        return checkout
    return Path(str(importlib.resources.files(package)))
