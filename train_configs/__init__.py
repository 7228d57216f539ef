"""Data package ``eca_timm.train_configs``: the YAML recipes for timm's train.py (no code)."""
