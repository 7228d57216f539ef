"""Weights: official checkpoints converted (``convert``), trained runs published to the Hugging Face Hub
(``publish``), the official releases (``release``); the source files they read (``checkpoint``), their folders
(``hub_folder``), model cards (``card``), the manifest's write side (``manifest``) and uploads (``upload``)."""
