"""Weights: official checkpoints converted (``convert``), trained runs published to the Hugging Face Hub
(``publish``), their folders (``hub_folder``) and model cards (``card``)."""
