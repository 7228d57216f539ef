"""Layers: the ECA layer and the fused BatchNorm -> ECA -> residual step (torch ops on the CPU, Triton on CUDA, the
plain ops whenever a model is scripted, traced or exported)."""
from .eca import EcaLayer, adaptive_kernel_size, check_kernel_size
from .fused import (BACKENDS, bn_eca_residual, capturing_graph, conv_input_mean, eca_residual, fused_backend,
                    set_fused_backend, step_path, triton_available)

__all__ = ['BACKENDS', 'EcaLayer', 'adaptive_kernel_size', 'bn_eca_residual', 'capturing_graph', 'check_kernel_size',
           'conv_input_mean', 'eca_residual', 'fused_backend', 'set_fused_backend', 'step_path', 'triton_available']
