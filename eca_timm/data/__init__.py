"""Data shipped with eca-timm: the Fashion-MNIST subset (see README.md here)."""
