"""ECA-MobileNetV2 (ECA-Net, CVPR 2020), laid out like timm's EfficientNet-family MobileNetV2.

The official model puts ECA after the projection BN of every inverted residual, also in blocks without a
residual; timm's ``InvertedResidual`` puts attention before the projection, so the block is defined here.
The model is timm's ``EfficientNet`` built from MobileNetV2's block definitions (stem, head, classifier,
feature info), with its blocks replaced by the ECA blocks of the same strides and widths.
"""
from functools import partial
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from timm.layers import DropPath, LayerType, get_act_layer, get_norm_act_layer, register_notrace_module
from timm.models import register_model, generate_default_cfgs
from timm.models._efficientnet_builder import decode_arch_def, efficientnet_init_weights
from timm.models.efficientnet import EfficientNet

from ..layers import EcaLayer, bn_eca_residual, eca_residual
from ._builder import RELEASED_KERNEL_SIZES, StageKernelSizes, build_eca_model, eca_cfg, resolve_stage_kernel_sizes
from ._pretrained import pretrained_cfgs
from ._state_dict import KeyMapping, StateDict

__all__ = ['EcaInvertedResidual', 'EcaMobileNetV2', 'MOBILENETV2_STAGES', 'MOBILENETV2_KEY_MAPPING']

# MobileNetV2 1.0: (expansion, out channels, blocks, first stride) per stage.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))


@register_notrace_module  # fx keeps the fused block whole: a traced graph runs eager's arithmetic
class EcaInvertedResidual(nn.Module):
    """Inverted residual (1x1 expand, 3x3 depthwise, 1x1 project) with ECA after the projection BN."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            exp_ratio: float = 6.0,
            eca_kernel_size: int = 3,
            act_layer: LayerType = nn.ReLU6,
            norm_layer: LayerType = nn.BatchNorm2d,
            drop_path_rate: float = 0.,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        norm_act_layer = get_norm_act_layer(norm_layer, act_layer)
        mid_chs = int(round(in_chs * exp_ratio))
        self.has_skip = stride == 1 and in_chs == out_chs
        if exp_ratio != 1:
            self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False, **dd)
            self.bn1 = norm_act_layer(mid_chs, inplace=True, **dd)
        else:
            self.conv_pw = nn.Identity()
            self.bn1 = nn.Identity()
        self.conv_dw = nn.Conv2d(mid_chs, mid_chs, 3, stride=stride, padding=1, groups=mid_chs, bias=False, **dd)
        self.bn2 = norm_act_layer(mid_chs, inplace=True, **dd)
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False, **dd)
        self.bn3 = norm_act_layer(out_chs, apply_act=False, **dd)
        self.eca = EcaLayer(out_chs, kernel_size=eca_kernel_size, **dd)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()

    def feature_info(self, location: str) -> Dict[str, Any]:
        """Where timm's EfficientNet takes this block's features (``'expansion'``: the projection's input)."""
        if location == 'expansion':
            return dict(module='conv_pwl', hook_type='forward_pre', num_chs=self.conv_pwl.in_channels)
        return dict(module='', num_chs=self.conv_pwl.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.has_skip else None
        x = self.bn1(self.conv_pw(x))
        x = self.bn2(self.conv_dw(x))
        x = self.conv_pwl(x)
        if torch.jit.is_scripting():  # TorchScript cannot compile the fused step's Python: the plain ops
            x = self.bn3(x)
            gate = self.eca.gate(x)
            if shortcut is not None:
                gate = self.drop_path(gate)
            return eca_residual(x, gate, shortcut)
        # ECA's scale fused into the residual add; drop path scales the per-sample gate.
        return bn_eca_residual(x, self.bn3, self.eca, shortcut, self.drop_path if self.has_skip else None)


def _official_prefixes() -> Dict[str, str]:
    """Official/torchvision MobileNetV2 module prefixes (``features.N``) -> this model's, from its stages."""
    n_blocks = sum(n for _, _, n, _ in MOBILENETV2_STAGES)
    prefixes = {
        'features.0.0.': 'conv_stem.', 'features.0.1.': 'bn1.',
        f'features.{n_blocks + 1}.0.': 'conv_head.', f'features.{n_blocks + 1}.1.': 'bn2.',
        'classifier.1.': 'classifier.',
    }
    idx = 1
    for s, (t, _, n, _) in enumerate(MOBILENETV2_STAGES):
        if t == 1:  # no expansion: dw ConvBNReLU, pw-linear conv, bn, eca
            pairs = (('0.0', 'conv_dw'), ('0.1', 'bn2'), ('1', 'conv_pwl'), ('2', 'bn3'), ('3', 'eca'))
        else:  # pw ConvBNReLU, dw ConvBNReLU, pw-linear conv, bn, eca
            pairs = (('0.0', 'conv_pw'), ('0.1', 'bn1'), ('1.0', 'conv_dw'), ('1.1', 'bn2'),
                     ('2', 'conv_pwl'), ('3', 'bn3'), ('4', 'eca'))
        for i in range(n):
            prefixes.update({f'features.{idx}.conv.{src}.': f'blocks.{s}.{i}.{dst}.' for src, dst in pairs})
            idx += 1
    return prefixes


def _remap_official_keys(state_dict: StateDict) -> StateDict:
    """Official ECA-MobileNetV2 / torchvision keys (``features.N.conv.M``) -> this model's; own keys pass."""
    if not any(k.startswith('features.') for k in state_dict):
        return state_dict
    prefixes = _official_prefixes()
    out = {}
    for k, v in state_dict.items():
        head = k
        while head and head + '.' not in prefixes:  # longest module prefix that maps
            head = head.rpartition('.')[0]
        out[prefixes[head + '.'] + k[len(head) + 1:] if head else k] = v
    return out


MOBILENETV2_KEY_MAPPING = KeyMapping(remap=_remap_official_keys)

# MOBILENETV2_STAGES in timm's block notation: timm's own mobilenetv2_100 definition, 'ir' for its first 'ds' block.
_ARCH_DEF = [[f'ir_r{n}_k3_s{s}_e{t}_c{c}'] for t, c, n, s in MOBILENETV2_STAGES]


class EcaMobileNetV2(EfficientNet):
    """ECA-MobileNetV2 1.0 with timm's EfficientNet interface.

    Args:
        num_classes: Classifier classes (0 for no classifier).
        in_chans: Input channels.
        eca_kernel_sizes: One odd kernel size per stage (7), one odd int for all, or ``'adaptive'``.
        drop_rate: Dropout before the classifier (official: 0.25).
        drop_path_rate: Stochastic depth rate, linear over blocks.
        global_pool: timm pooling type.
        act_layer: Activation (official: ReLU6).
        norm_layer: Normalization layer.
    """
    checkpoint_key_mapping = MOBILENETV2_KEY_MAPPING

    def __init__(
            self,
            num_classes: int = 1000,
            in_chans: int = 3,
            eca_kernel_sizes: StageKernelSizes = RELEASED_KERNEL_SIZES['eca_mobilenetv2'],
            stem_size: int = 32,
            num_features: int = 1280,
            drop_rate: float = 0.25,
            drop_path_rate: float = 0.,
            global_pool: str = 'avg',
            act_layer: LayerType = nn.ReLU6,
            norm_layer: LayerType = nn.BatchNorm2d,
            bn_momentum: Optional[float] = None,
            bn_eps: Optional[float] = None,
            device=None,
            dtype=None,
    ) -> None:
        kernel_sizes = resolve_stage_kernel_sizes(eca_kernel_sizes, [c for _, c, _, _ in MOBILENETV2_STAGES])
        bn_args = {k: v for k, v in (('momentum', bn_momentum), ('eps', bn_eps)) if v is not None}
        norm_layer = partial(norm_layer, **bn_args) if bn_args else norm_layer
        act_layer = get_act_layer(act_layer)
        # timm builds everything its methods read (stem, head, classifier, feature_info, stage_ends) from the
        # block definitions; only the blocks are then swapped for ECA blocks of the same strides and widths.
        super().__init__(
            decode_arch_def(_ARCH_DEF), num_classes=num_classes, num_features=num_features, in_chans=in_chans,
            stem_size=stem_size, fix_stem=True, act_layer=act_layer, norm_layer=norm_layer, drop_rate=drop_rate,
            drop_path_rate=drop_path_rate, global_pool=global_pool, device=device, dtype=dtype)
        self.blocks = _eca_stages(stem_size, kernel_sizes, act_layer, norm_layer, drop_path_rate, device, dtype)
        efficientnet_init_weights(self.blocks)
        self.eca_kernel_sizes = kernel_sizes


def _eca_stages(
        in_chs: int,
        kernel_sizes: Tuple[int, ...],
        act_layer: LayerType,
        norm_layer: LayerType,
        drop_path_rate: float,
        device=None,
        dtype=None,
) -> nn.Sequential:
    """MOBILENETV2_STAGES as ECA inverted residuals, drop path linear over blocks (as timm's builder)."""
    num_blocks = sum(n for _, _, n, _ in MOBILENETV2_STAGES)
    stages: List[nn.Module] = []
    block_idx = 0
    for (t, c, n, s), k in zip(MOBILENETV2_STAGES, kernel_sizes):
        blocks = []
        for i in range(n):
            blocks.append(EcaInvertedResidual(
                in_chs, c, stride=s if i == 0 else 1, exp_ratio=t, eca_kernel_size=k, act_layer=act_layer,
                norm_layer=norm_layer, drop_path_rate=drop_path_rate * block_idx / num_blocks, device=device,
                dtype=dtype))
            in_chs = c
            block_idx += 1
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages)


def _create_eca_mobilenetv2(variant: str, pretrained: bool = False, **kwargs: Any) -> EcaMobileNetV2:
    return build_eca_model(EcaMobileNetV2, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return eca_cfg(first_conv='conv_stem', classifier='classifier', **kwargs)


# Tags, Hub repo ids and metrics come from hub/manifest.json (the model cards are generated from it too).
default_cfgs = generate_default_cfgs({k: _cfg(**v) for k, v in pretrained_cfgs(['eca_mobilenetv2']).items()})


@register_model
def eca_mobilenetv2(pretrained: bool = False, **kwargs: Any) -> EcaMobileNetV2:
    """ECA-MobileNetV2 1.0 with the released ECA kernel sizes (1 below 96 channels, else 3)."""
    return _create_eca_mobilenetv2('eca_mobilenetv2', pretrained, **kwargs)
