"""Layers: the ECA layer and the fused BatchNorm -> ECA -> residual step (torch ops on the CPU, Triton on CUDA)."""
from .eca import EcaLayer, adaptive_kernel_size, check_kernel_size
from .fused import (BACKENDS, bn_eca_residual, conv_input_mean, fused_backend, set_fused_backend,
                    triton_available)

__all__ = ['BACKENDS', 'EcaLayer', 'adaptive_kernel_size', 'bn_eca_residual', 'check_kernel_size', 'conv_input_mean',
           'fused_backend', 'set_fused_backend', 'triton_available']
