"""Efficient Channel Attention (ECA) layer, as in the official ECA-Net code.

Paper: "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", CVPR 2020
(https://arxiv.org/abs/1910.03151). Global average pool -> 1-D conv of size k across channels
(zero padded, no bias) -> sigmoid -> scale the input. The only parameter is the conv weight [1, 1, k].

Unlike ``timm.layers.EcaModule``, an explicit ``kernel_size`` is honoured when ``channels`` is given:
the released ECA-Net weights use hand-picked per-stage sizes, not the adaptive rule.
"""
import math
from typing import Optional, Union

import torch
from torch import nn

__all__ = ['EcaLayer', 'adaptive_kernel_size', 'check_kernel_size']

KernelSize = Union[int, str]


def adaptive_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """The paper's rule: t = |(log2(C) + b) / gamma|, k = t if t is odd else t + 1."""
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f'adaptive ECA kernel size needs a positive channel count, got {channels!r}')
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


def check_kernel_size(kernel_size: object) -> int:
    """Return ``kernel_size`` if it is a positive odd int, else raise a ValueError saying what fits."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise ValueError(
            f"ECA kernel size must be a positive odd int or 'adaptive', got {kernel_size!r} "
            f"({type(kernel_size).__name__})")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f'ECA kernel size must be a positive odd int (1, 3, 5, ...) so the channel conv keeps C outputs, '
            f'got {kernel_size}')
    return kernel_size


class EcaLayer(nn.Module):
    """Efficient Channel Attention.

    Args:
        channels: Input channels; only needed for ``kernel_size='adaptive'`` (and kept for timm's
            ``create_attn``, which passes channels first).
        kernel_size: Odd size of the 1-D channel conv, or ``'adaptive'`` for the paper's rule.
        gamma: Adaptive rule's gamma.
        beta: Adaptive rule's b.
    """

    def __init__(
            self,
            channels: Optional[int] = None,
            kernel_size: KernelSize = 3,
            gamma: float = 2,
            beta: float = 1,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        if kernel_size == 'adaptive':
            if channels is None:
                raise ValueError("kernel_size='adaptive' needs channels, e.g. EcaLayer(256, 'adaptive')")
            kernel_size = adaptive_kernel_size(channels, gamma, beta)
        self.kernel_size = check_kernel_size(kernel_size)
        self.conv = nn.Conv1d(
            1, 1, kernel_size=self.kernel_size, padding=(self.kernel_size - 1) // 2, bias=False,
            device=device, dtype=dtype)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel attention weights of shape [B, C, 1, 1] in ``x``'s dtype."""
        b, c = x.shape[0], x.shape[1]
        y = self.conv(x.mean(dim=(2, 3)).view(b, 1, c)).sigmoid()
        return y.view(b, c, 1, 1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return f'kernel_size={self.kernel_size}'
