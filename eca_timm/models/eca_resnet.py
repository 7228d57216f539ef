"""ECA-ResNet (ECA-Net, CVPR 2020) on timm's ResNet.

The official blocks are torchvision's ResNet blocks with an ECA layer after the last BN, before the
residual add; timm's ResNet keeps block attention at ``.se`` in exactly that place. Each stage has its
own ECA kernel size (the released weights were trained with hand-picked sizes: ``RELEASED_KERNEL_SIZES``).
timm's blocks build the ECA layer themselves (``block_args=dict(attn_layer=...)`` through ``create_attn``), and
run the last BN, ECA and the residual add as one fused step (``layers.bn_eca_residual``): same modules, state dict
and values, less time and memory.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from timm.layers import register_notrace_module
from timm.models import register_model, generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..layers import EcaLayer, bn_eca_residual, conv_input_mean, eca_residual
from ._builder import RELEASED_KERNEL_SIZES, StageKernelSizes, build_eca_model, eca_cfg, resolve_stage_kernel_sizes
from ._pretrained import pretrained_cfgs
from ._state_dict import CheckpointMatch, KeyMapping, StateDict

__all__ = ['EcaBasicBlock', 'EcaBottleneck', 'EcaResNet', 'ECA_RESNET_ARCHS', 'RESNET_KEY_MAPPING']


# fx (timm's feature extraction) keeps the fused blocks whole, so a traced graph runs the same arithmetic as eager
@register_notrace_module
class EcaBasicBlock(BasicBlock):
    """timm's ``BasicBlock`` with its ``.se`` ECA layer fused into the residual add (``bn_eca_residual``).

    Same modules, state dict and values as ``BasicBlock(attn_layer=EcaLayer)``; drop path scales the per-sample
    gate instead of the full-size branch (the same per-sample factor); on CUDA the final ReLU runs in the same
    kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)
        x = self.conv2(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        if torch.jit.is_scripting():  # TorchScript cannot compile the fused step's Python: the plain ops
            x = self.bn2(x)
            gate = self.se.gate(x)
            if self.drop_path is not None:
                gate = self.drop_path(gate)
            return self.act2(eca_residual(x, gate, shortcut))
        return bn_eca_residual(x, self.bn2, self.se, shortcut, self.drop_path, act=self.act2)


@register_notrace_module
class EcaBottleneck(Bottleneck):
    """timm's ``Bottleneck`` with its ``.se`` ECA layer fused into the residual add (``bn_eca_residual``).

    Same modules, state dict and values as ``Bottleneck(attn_layer=EcaLayer)``; drop path scales the per-sample
    gate instead of the full-size branch (the same per-sample factor). Where it is cheaper, ECA's spatial mean is
    taken from conv3's input (a quarter of the channels) through the 1x1 conv (``layers.conv_input_mean``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.drop_block(x)
        x = self.act2(x)
        x = self.aa(x)
        z_mean = None
        if not torch.jit.is_scripting():
            z_mean = conv_input_mean(self.conv3, self.bn3, x)  # before conv3, so that its input can be freed
        x = self.conv3(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        if torch.jit.is_scripting():  # TorchScript cannot compile the fused step's Python: the plain ops
            x = self.bn3(x)
            gate = self.se.gate(x)
            if self.drop_path is not None:
                gate = self.drop_path(gate)
            return self.act3(eca_residual(x, gate, shortcut))
        return bn_eca_residual(x, self.bn3, self.se, shortcut, self.drop_path, self.conv3, z_mean, act=self.act3)


# Block and blocks per stage of each depth (kernel sizes: RELEASED_KERNEL_SIZES).
ECA_RESNET_ARCHS: Dict[str, Dict[str, Any]] = {
    'eca_resnet18': dict(block=EcaBasicBlock, layers=(2, 2, 2, 2)),
    'eca_resnet34': dict(block=EcaBasicBlock, layers=(3, 4, 6, 3)),
    'eca_resnet50': dict(block=EcaBottleneck, layers=(3, 4, 6, 3)),
    'eca_resnet101': dict(block=EcaBottleneck, layers=(3, 4, 23, 3)),
    'eca_resnet152': dict(block=EcaBottleneck, layers=(3, 8, 36, 3)),
}


def _remap_official_keys(state_dict: StateDict) -> StateDict:
    """Official ECA-ResNet keys are torchvision's with ``.eca.`` where timm's ResNet has ``.se.``."""
    return {k.replace('.eca.', '.se.'): v for k, v in state_dict.items()}


def _match_checkpoint(state_dict: StateDict) -> CheckpointMatch:
    """Blocks per stage and block type of a ResNet checkpoint, and the registered ECA-ResNet of that depth."""
    blocks: List[int] = []
    for stage in range(1, 5):
        ids = {int(k.split('.')[1]) for k in state_dict if k.startswith(f'layer{stage}.') and k.split('.')[1].isdigit()}
        blocks.append(max(ids) + 1 if ids else 0)
    bottleneck = any(k.endswith('.conv3.weight') for k in state_dict)
    match = next((name for name, arch in ECA_RESNET_ARCHS.items()
                  if tuple(arch['layers']) == tuple(blocks) and (arch['block'].expansion == 4) == bottleneck), None)
    kind = 'bottleneck' if bottleneck else 'basic'
    return CheckpointMatch(
        f'The checkpoint has {blocks} {kind} blocks per stage ({match or "no registered ECA-ResNet has that"}).', match)


# How ResNet checkpoints map onto timm's ResNet (also the CIFAR-stem study models).
RESNET_KEY_MAPPING = KeyMapping(remap=_remap_official_keys, match=_match_checkpoint)


def _stage_eca(stage_channels: Sequence[int], kernel_sizes: Sequence[int]) -> Callable[..., EcaLayer]:
    """timm's ``attn_layer`` for every block: ``create_attn`` calls it with the block's output channels, which tell
    its stage (ResNet stages differ in width), and so the stage's kernel size."""
    by_channels: Dict[int, int] = {}
    for chs, k in zip(stage_channels, kernel_sizes):
        if by_channels.setdefault(chs, k) != k:
            raise ValueError(
                f'eca_kernel_sizes={tuple(kernel_sizes)}: stages of the same width ({chs} channels) need the same '
                f'ECA kernel size; give them one size, or pass one odd int or "adaptive"')

    def eca(channels: int, **kwargs: Any) -> EcaLayer:
        return EcaLayer(channels, kernel_size=by_channels[channels], **kwargs)
    return eca


class EcaResNet(ResNet):
    """timm's ResNet with an ECA layer in every residual block.

    Args:
        block: Residual block class (``EcaBasicBlock``/``EcaBottleneck``, or timm's ``BasicBlock``/``Bottleneck``).
        layers: Blocks per stage.
        eca_kernel_sizes: One odd kernel size per stage, one odd int for all stages, or ``'adaptive'``
            (the paper's rule from each stage's channel count).
        block_args: timm's extra block arguments; the attention (``attn_layer``) is ECA.
        **kwargs: Any other ``timm.models.resnet.ResNet`` argument.
    """
    checkpoint_key_mapping = RESNET_KEY_MAPPING

    def __init__(
            self,
            block: Type[Union[BasicBlock, Bottleneck]],
            layers: Tuple[int, ...],
            eca_kernel_sizes: StageKernelSizes = 3,
            block_args: Optional[Dict[str, Any]] = None,
            **kwargs: Any,
    ) -> None:
        if block_args and 'attn_layer' in block_args:
            raise ValueError(f"block_args attn_layer={block_args['attn_layer']!r}: an ECA-ResNet's block attention "
                             f"is ECA (eca_kernel_sizes sets it); for other attention use timm's ResNet")
        stage_chs = [c * block.expansion for c in kwargs.get('channels', (64, 128, 256, 512))]
        kernel_sizes = resolve_stage_kernel_sizes(eca_kernel_sizes, stage_chs)  # fail before building
        block_args = dict(block_args or {}, attn_layer=_stage_eca(stage_chs, kernel_sizes))
        super().__init__(block, layers, block_args=block_args, **kwargs)
        for blk in self.modules():
            if isinstance(blk, (BasicBlock, Bottleneck)):
                # parameters in eca-timm 0.1's order (ECA last in each block): optimizer states of earlier train.py
                # runs index parameters by position, so --resume keeps working across the upgrade
                blk._modules['se'] = blk._modules.pop('se')
        self.eca_kernel_sizes = kernel_sizes


def _create_eca_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    model_args = dict(ECA_RESNET_ARCHS[variant], eca_kernel_sizes=RELEASED_KERNEL_SIZES[variant])
    return build_eca_model(EcaResNet, variant, pretrained, **dict(model_args, **kwargs))


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return eca_cfg(first_conv='conv1', classifier='fc', **kwargs)


# Tags, Hub repo ids and metrics come from hub/manifest.json (the model cards are generated from it too).
default_cfgs = generate_default_cfgs({k: _cfg(**v) for k, v in pretrained_cfgs(ECA_RESNET_ARCHS).items()})


@register_model
def eca_resnet18(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-18 with the released per-stage ECA kernel sizes."""
    return _create_eca_resnet('eca_resnet18', pretrained, **kwargs)


@register_model
def eca_resnet34(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-34 with the released per-stage ECA kernel sizes."""
    return _create_eca_resnet('eca_resnet34', pretrained, **kwargs)


@register_model
def eca_resnet50(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-50 with the released per-stage ECA kernel sizes."""
    return _create_eca_resnet('eca_resnet50', pretrained, **kwargs)


@register_model
def eca_resnet101(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-101 with the released per-stage ECA kernel sizes."""
    return _create_eca_resnet('eca_resnet101', pretrained, **kwargs)


@register_model
def eca_resnet152(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-152 with the released per-stage ECA kernel sizes."""
    return _create_eca_resnet('eca_resnet152', pretrained, **kwargs)
