"""Data package ``eca_timm.hub_data``: the manifest of pretrained tags and the model card template (no code)."""
