"""PoseResNet 2D nets (Simple Baselines / VoxelPose): a torchvision ResNet trunk, deconv head, 1x1 conv.

Weights start random (torchvision ``weights=None``); a LOCAL state dict file can initialise the trunk.
Nothing is ever downloaded.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

TRUNK_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
TRUNK_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


class PretrainedWeightsError(ValueError):
    """model.pretrained_backbone points to a missing, unreadable or mismatching state dict file."""


def build_trunk(arch: str) -> nn.Sequential:
    """torchvision ResNet (random init) without avgpool/fc: (N, 3, H, W) -> (N, C, H/32, W/32).

    Child names equal torchvision's, so a torchvision ResNet state dict (minus fc.*) loads as is.
    """
    if arch not in TRUNK_CHANNELS:
        raise ValueError(f"model.backbone: expected one of {', '.join(TRUNK_CHANNELS)}, got {arch!r}")
    net = getattr(torchvision.models, arch)(weights=None)
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in TRUNK_CHILDREN))


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a state dict file (optionally wrapped in {"state_dict": ...}, "module."-prefixed)."""
    if not path.is_file():
        raise PretrainedWeightsError(f"model.pretrained_backbone: {path}: file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means the file is unusable
        raise PretrainedWeightsError(
            f"model.pretrained_backbone: {path}: not a loadable torch state dict ({type(err).__name__})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise PretrainedWeightsError(f"model.pretrained_backbone: {path}: expected a dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def load_trunk_weights(trunk: nn.Module, path: str | Path) -> None:
    """Copy a local ResNet state dict (torchvision key names; fc.* ignored) into ``trunk``.

    Raises `PretrainedWeightsError` naming the path on a missing / corrupt file or mismatching keys.
    """
    path = Path(path)
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    try:
        result = trunk.load_state_dict(state, strict=False)
    except RuntimeError as err:
        reason = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise PretrainedWeightsError(f"model.pretrained_backbone: {path}: {reason}") from None
    if result.missing_keys or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"model.pretrained_backbone: {path}: not a matching ResNet state dict "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")


def _deconv_head(in_channels: int, layers: int, channels: int, joints: int) -> nn.Sequential:
    """``layers`` x [ConvTranspose2d(k4, s2, p1) + BN + ReLU] then a 1x1 conv to ``joints`` maps."""
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.ConvTranspose2d(in_channels, channels, 4, stride=2, padding=1, bias=False),
                 nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        in_channels = channels
    mods.append(nn.Conv2d(in_channels, joints, kernel_size=1))
    head = nn.Sequential(*mods)
    for m in head.modules():
        if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return head


class PoseResNet(nn.Module):
    """ResNet trunk + deconv head: images (N, 3, H, W) -> maps (N, J, H/32*2^layers, W/32*2^layers).

    arch: resnet18/34/50; trunk: reuse an existing trunk module (attention "shared" variant) instead
    of building one; sigmoid: apply a sigmoid to the output (attention maps); pretrained: local path.
    """

    def __init__(self, arch: str, num_joints: int, deconv_layers: int, deconv_channels: int,
                 trunk: nn.Module | None = None, sigmoid: bool = False, pretrained: str | None = None) -> None:
        super().__init__()
        if arch not in TRUNK_CHANNELS:
            raise ValueError(f"model.backbone: expected one of {', '.join(TRUNK_CHANNELS)}, got {arch!r}")
        self.arch = arch
        self.trunk = trunk if trunk is not None else build_trunk(arch)
        if pretrained:
            load_trunk_weights(self.trunk, pretrained)
        self.head = _deconv_head(TRUNK_CHANNELS[arch], deconv_layers, deconv_channels, num_joints)
        self.sigmoid = sigmoid

    def forward(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W) normalised -> (N, J, h, w) heatmaps (sigmoid-ed if ``sigmoid``)."""
        out = self.head(self.trunk(images))
        return torch.sigmoid(out) if self.sigmoid else out
