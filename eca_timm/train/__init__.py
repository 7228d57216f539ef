"""Training: timm's own scripts with the models registered (``run``), the attention study, the quickstart and its
Fashion-MNIST data."""
