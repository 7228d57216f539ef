"""BatchNorm -> ECA -> residual add as one step, for the ECA blocks: which implementation runs it.

Three implementations give the same values (``step_path`` chooses, the one dispatch rule):

- ``'plain'``: the plain ops, ``bn(c)`` (the BatchNorm module), ``EcaLayer.gate`` and an out-of-place add
  (``eca_residual``). Whenever the model is captured as a graph instead of run (``capturing_graph``: TorchScript
  scripting or tracing, which the legacy ONNX exporter uses; torch.export, which the dynamo ONNX exporter uses; fx
  symbolic tracing), so exporters and tracers see ordinary ops and no Python branch depends on a tensor's size; and
  for norm layers other than a plain BatchNorm.
- ``'torch'``: one autograd function in torch ops with a closed-form backward (``_torch_ops``): the CPU, eager and
  torch.compile.
- ``'triton'``: Triton kernels registered as ``torch.library`` ops (``_triton_ops``): CUDA tensors, eager and
  torch.compile.

The model families register their fused blocks as fx leaf modules (timm's feature extraction then runs them as in
eager); TorchScript cannot compile this module's Python, so the scripted blocks call ``eca_residual`` themselves.
"""
import contextlib
import importlib.util
import logging
import os
from typing import Iterator, Optional

import torch
from torch import nn

from timm.layers import BatchNormAct2d

from ._torch_ops import accumulation_dtype, torch_bn_eca_residual
from .eca import EcaLayer

try:
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as _is_fx_tracing
except ImportError:  # torch < 2.5
    from torch.fx._symbolic_trace import is_fx_tracing as _is_fx_tracing

_is_exporting = getattr(torch.compiler, 'is_exporting', None) or (lambda: False)  # torch < 2.5: no such mode

__all__ = ['BACKENDS', 'bn_eca_residual', 'capturing_graph', 'conv_input_mean', 'eca_residual', 'fused_backend',
           'set_fused_backend', 'step_path', 'triton_available']

_logger = logging.getLogger(__name__)

# 'auto': Triton kernels for CUDA tensors (NCHW or channels_last), torch ops elsewhere; 'torch': torch ops
# everywhere; 'triton': the kernels on any device (on the CPU only under TRITON_INTERPRET=1, for tests).
BACKENDS = ('auto', 'torch', 'triton')
BACKEND_ENV = 'ECA_TIMM_FUSED_BACKEND'
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _load_triton_ops():
    """``_triton_ops`` (the kernels as torch.library ops) where Triton can run them, else None. Loaded at import:
    torch.compile should find the ops registered rather than trace an import."""
    if not hasattr(torch.library, 'custom_op') or importlib.util.find_spec('triton') is None:
        return None  # torch < 2.4, or a CPU-only torch without Triton
    if not (torch.cuda.is_available() or os.environ.get('TRITON_INTERPRET') == '1'):
        return None
    try:
        from . import _triton_ops
    except Exception as e:  # a Triton that does not match this torch: the torch ops still work
        _logger.warning('eca_timm: Triton kernels unavailable (%s); the fused ECA step uses torch ops', e)
        return None
    return _triton_ops


_ops = _load_triton_ops()
_backend = os.environ.get(BACKEND_ENV, 'auto')
if _backend not in BACKENDS:
    raise ValueError(f'{BACKEND_ENV}={_backend!r}: choose one of {", ".join(BACKENDS)}')


def triton_available() -> bool:
    """True where the fused ECA step can run as Triton kernels (CUDA with Triton, or TRITON_INTERPRET=1)."""
    return _ops is not None


def set_fused_backend(name: str) -> str:
    """Choose how the fused ECA step runs (``BACKENDS``); returns the previous choice."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f'fused ECA backend must be one of {", ".join(BACKENDS)}, got {name!r}')
    if name == 'triton' and _ops is None:
        raise RuntimeError('fused ECA backend triton: Triton kernels are not available here (they need CUDA and '
                           'triton, or TRITON_INTERPRET=1 set before eca_timm is imported)')
    previous, _backend = _backend, name
    return previous


@contextlib.contextmanager
def fused_backend(name: str) -> Iterator[None]:
    """``set_fused_backend(name)`` for the duration of a block."""
    previous = set_fused_backend(name)
    try:
        yield
    finally:
        set_fused_backend(previous)


def capturing_graph() -> bool:
    """True while the model is captured as a graph instead of run: scripted or traced by TorchScript (also inside
    the legacy ONNX exporter), exported by torch.export (also inside the dynamo ONNX exporter), or symbolically
    traced by fx. The ECA blocks then run the plain ops, whatever the device and backend. Scriptable."""
    if torch.jit.is_scripting():
        return True
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or _is_exporting() or _is_fx_tracing()


def _is_plain_batch_norm(bn: nn.Module) -> bool:
    """True when ``bn``'s forward is exactly ``nn.BatchNorm2d``'s (timm's BatchNormAct2d without act and drop)."""
    if type(bn) is nn.BatchNorm2d:
        return True
    return type(bn) is BatchNormAct2d and isinstance(bn.act, nn.Identity) and isinstance(bn.drop, nn.Identity)


def _triton_takes(t: torch.Tensor) -> bool:
    """The backend and tensor conditions of the Triton path (a [B, C, H, W] tensor on the kernels' device, in a
    dtype and layout they read)."""
    if _ops is None or _backend == 'torch' or (_backend == 'auto' and not t.is_cuda):
        return False
    return t.dim() == 4 and t.dtype in _TRITON_DTYPES and (
        t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last))


def step_path(c: torch.Tensor, bn: nn.Module, shortcut: Optional[torch.Tensor] = None) -> str:
    """The dispatch rule: which implementation runs ``bn_eca_residual`` on the conv output ``c``, ``'plain'``,
    ``'triton'`` or ``'torch'`` (this module's docstring). The graph-capture check comes first, so that a captured
    graph holds no check of a tensor's size, device or layout."""
    if capturing_graph() or not _is_plain_batch_norm(bn):
        return 'plain'
    if _triton_takes(c) and (shortcut is None or shortcut.shape == c.shape):
        return 'triton'
    return 'torch'


def eca_residual(x: torch.Tensor, gate: torch.Tensor, shortcut: Optional[torch.Tensor]) -> torch.Tensor:
    """The plain ECA residual: ``shortcut + x * gate`` (``x * gate`` without a shortcut), out of place.

    ``x`` is BatchNorm's output and ``gate`` its ``EcaLayer.gate`` with drop path applied (drop path scales the
    per-sample gate: the factor it would apply to the branch). Scriptable: TorchScript blocks call it directly.
    """
    return x * gate if shortcut is None else shortcut + x * gate


def _plain_bn_eca_residual(c: torch.Tensor, bn: nn.Module, eca: EcaLayer, shortcut: Optional[torch.Tensor],
                           drop_path: Optional[nn.Module], act: Optional[nn.Module]) -> torch.Tensor:
    """``bn_eca_residual`` in the plain ops, module by module."""
    x = bn(c)
    gate = eca.gate(x)
    if drop_path is not None:
        gate = drop_path(gate)
    out = eca_residual(x, gate, shortcut)
    return out if act is None else act(out)


def _is_pointwise_conv(conv: nn.Module) -> bool:
    """True for a bias-free 1x1, stride-1, ungrouped ``nn.Conv2d`` (one that commutes with the spatial mean)."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1 and conv.bias is None)


def conv_input_mean(conv: nn.Module, bn: nn.Module, z: torch.Tensor) -> Optional[torch.Tensor]:
    """``z``'s spatial mean (at least fp32, no grad) when ECA after ``bn(conv(z))`` should pool ``z`` instead.

    A 1x1 conv commutes with the spatial mean: ``mean_hw(conv(z)) = W @ mean_hw(z)``. For a bottleneck's last
    conv ``z`` has a quarter of the output channels, so pooling it is up to 4x cheaper, plus a [B, Cin] x [Cin, Cout]
    float64 matmul: worth it where ``B * H * W >= 16 * Cin`` (measured on CPU; it holds for ResNet-50's first two
    stages at batch 8, and the first three from batch 32). None where it does not apply (``bn_eca_residual`` then
    pools the conv output): off the torch-ops path (the Triton kernels pool in the pass that gathers BatchNorm's
    statistics; a captured graph runs the plain ops). Call it before ``conv`` so that ``z`` can be freed.
    """
    if step_path(z, bn) != 'torch' or not _is_pointwise_conv(conv):
        return None
    if z.shape[0] * z.shape[2] * z.shape[3] < 16 * z.shape[1]:
        return None
    with torch.no_grad():
        return z.mean(dim=(2, 3), dtype=accumulation_dtype(z.dtype))


def bn_eca_residual(c: torch.Tensor, bn: nn.Module, eca: EcaLayer, shortcut: Optional[torch.Tensor],
                    drop_path: Optional[nn.Module] = None, conv: Optional[nn.Module] = None,
                    input_mean: Optional[torch.Tensor] = None, act: Optional[nn.Module] = None) -> torch.Tensor:
    """``act(shortcut + drop_path(eca(bn(c))))`` (no add when ``shortcut`` is None, no ``act`` when None) as one
    fused step.

    Drop path scales each sample's gate instead of the full-size branch (the same per-sample factor: it is applied
    to a [B, 1] tensor of ones, which draws the same random numbers). With ``c = conv(z)`` pass ``conv`` and
    ``input_mean=conv_input_mean(conv, bn, z)``: ECA then pools ``z`` instead of ``c``. On the torch-ops path the
    result is written over ``bn(c)``'s buffer outside torch.compile; on the Triton path an ``nn.ReLU`` ``act`` runs
    inside the kernel.
    """
    path = step_path(c, bn, shortcut)
    if path == 'plain':
        return _plain_bn_eca_residual(c, bn, eca, shortcut, drop_path, act)
    if path == 'triton':
        relu = type(act) is nn.ReLU
        out = _ops.triton_bn_eca_residual(c, bn, eca, shortcut, drop_path, relu)
        return out if relu or act is None else act(out)
    out = torch_bn_eca_residual(c, bn, eca, shortcut, drop_path, conv, input_mean)
    return out if act is None else act(out)
