"""ResNet + Feature Pyramid Network: an image batch in, the pyramid P2-P6 out.

Module and parameter names follow torchvision's ``BackboneWithFPN`` (``body.layer1.0.conv1``,
``fpn.inner_blocks.0.0``) so that its checkpoints load without a key map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

# depth -> (block, blocks per stage)
_RESNET_LAYOUTS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters: ``y = (x - mean) / sqrt(var + eps) * w + b``.

    The four tensors are buffers, as in torchvision, so a BatchNorm2d state dict loads into it
    (its ``num_batches_tracked`` is dropped on load).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        # one fused pass over x; keeps x's memory format (channels-last stays channels-last)
        return torch.addcmul(shift.view(1, -1, 1, 1).to(x.dtype), x, scale.view(1, -1, 1, 1).to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class ResNetBody(nn.Module):
    """ResNet without its classifier: returns C2..C5 (strides 4, 8, 16, 32).

    ``width`` is the channel count of the stem and the first stage (64 in the paper's ResNets; the
    stages double it); narrower bodies keep torchvision's module names and structure.
    """

    def __init__(
        self, depth: int, norm_layer: Callable[[int], nn.Module], zero_init_residual: bool = False, width: int = 64
    ) -> None:
        super().__init__()
        if depth not in _RESNET_LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(_RESNET_LAYOUTS)}, got {depth}")
        block, layers = _RESNET_LAYOUTS[depth]
        resnet = ResNet(block, layers, norm_layer=norm_layer, zero_init_residual=zero_init_residual)
        if width != 64:
            _narrow(resnet, block, layers, width, norm_layer, zero_init_residual)
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        expansion = block.expansion
        self.out_channels = [width * expansion * 2**i for i in range(4)]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


def _narrow(
    resnet: ResNet,
    block: type[BasicBlock] | type[Bottleneck],
    layers: list[int],
    width: int,
    norm_layer: Callable[[int], nn.Module],
    zero_init_residual: bool,
) -> None:
    """Rebuild ``resnet``'s stem and stages with ``width`` channels in place of 64 (torchvision's
    ``ResNet`` fixes 64), initialised as torchvision initialises them."""
    resnet.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    resnet.bn1 = norm_layer(width)
    resnet.inplanes = width
    resnet.base_width = 64  # torchvision's Bottleneck width factor, not the stage width
    for index, blocks in enumerate(layers):
        stage = resnet._make_layer(block, width * 2**index, blocks, stride=1 if index == 0 else 2)
        setattr(resnet, f"layer{index + 1}", stage)
    for m in resnet.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in resnet.modules():
            if isinstance(m, Bottleneck):
                nn.init.constant_(m.bn3.weight, 0)
            elif isinstance(m, BasicBlock):
                nn.init.constant_(m.bn2.weight, 0)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Wu & He 2018), fewer for narrow layers."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``"bn"``: BatchNorm2d, ``"gn"``: GroupNorm."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return group_norm(channels)
    raise ValueError(f"unknown normalisation {kind!r}")


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: str, relu: bool) -> nn.Sequential:
    """conv (bias only without norm) -> [norm: "bn" or "gn"; "" for none] -> [ReLU], as
    torchvision's Conv2dNormActivation."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not norm)
    ]
    if norm:
        layers.append(norm_layer(norm, out_channels))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FeaturePyramid(nn.Module):
    """FPN (Lin et al. 2017): 1x1 lateral convs, nearest top-down upsampling, 3x3 output convs,
    and P6 as a stride-2 subsampling of P5 (used by the RPN only)."""

    def __init__(self, in_channels: list[int], out_channels: int = 256, norm: str = "") -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(conv_norm(c, out_channels, 1, norm, relu=False) for c in in_channels)
        self.layer_blocks = nn.ModuleList(
            conv_norm(out_channels, out_channels, 3, norm, relu=False) for _ in in_channels
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, c: list[Tensor]) -> list[Tensor]:
        """C2..C5 -> [P2, P3, P4, P5, P6], each (N, out_channels, H/stride, W/stride)."""
        last_inner = self.inner_blocks[-1](c[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(c) - 2, -1, -1):
            lateral = self.inner_blocks[idx](c[idx])
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            results.insert(0, self.layer_blocks[idx](last_inner))
        # max-pool with kernel 1 and stride 2 is a subsampling
        results.append(results[-1][:, :, ::2, ::2])
        return results


class BackboneWithFPN(nn.Module):
    """ResNet body (FrozenBatchNorm, or GroupNorm or BatchNorm when trained from scratch) + FPN."""

    def __init__(
        self,
        depth: int = 50,
        fpn_norm: str = "",
        frozen_bn_eps: float = 1e-5,
        body_norm: str = "frozen_bn",
        out_channels: int = 256,
        body_width: int = 64,
    ) -> None:
        super().__init__()
        if body_norm == "frozen_bn":
            self.body = ResNetBody(depth, partial(FrozenBatchNorm2d, eps=frozen_bn_eps), width=body_width)
        elif body_norm == "gn":
            # zero-initialised last norm of each residual block: every block starts as the identity
            self.body = ResNetBody(depth, group_norm, zero_init_residual=True, width=body_width)
        elif body_norm == "bn":
            self.body = ResNetBody(depth, nn.BatchNorm2d, zero_init_residual=True, width=body_width)
        else:
            raise ValueError(f"unknown backbone normalisation {body_norm!r}")
        self.out_channels = out_channels
        self.fpn = FeaturePyramid(self.body.out_channels, out_channels, norm=fpn_norm)

    def forward(self, images: Tensor) -> list[Tensor]:
        """(N, 3, H, W) normalised, padded images -> [P2..P6]."""
        return self.fpn(self.body(images))

    def freeze_stages(self, trainable_layers: int) -> None:
        """Train only the last ``trainable_layers`` of (conv1, layer1, ..., layer4); 5 trains all."""
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
        stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        if trainable_layers == 5:
            stages.append("bn1")
        for name, parameter in self.body.named_parameters():
            parameter.requires_grad_(any(name.startswith(stage) for stage in stages))
