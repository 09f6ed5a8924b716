"""V2V 3D CNN (Moon et al.; VoxelPose's V2VNet) with a configurable base width.

Front 7^3 block, a residual block, an encoder-decoder with two 2x max-pooling levels and skip
connections, and a 1x1x1 output conv. Width w (``model.v2v_width``; VoxelPose: 32) gives channels
w/2 (front), w, 2w, 4w. Every spatial size must be divisible by 4 (e.g. 32x32x8, 16^3, 80x80x20, 64^3).
"""

from __future__ import annotations

from torch import Tensor, nn


class Basic3DBlock(nn.Sequential):
    """Conv3d(k, same padding) + BN + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(nn.Conv3d(cin, cout, kernel, padding=(kernel - 1) // 2), nn.BatchNorm3d(cout),
                         nn.ReLU(inplace=True))


class Res3DBlock(nn.Module):
    """Two 3^3 conv+BN layers with an identity (or 1^3 conv) skip, then ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.res = nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                                 nn.Conv3d(cout, cout, 3, padding=1), nn.BatchNorm3d(cout))
        self.skip = (nn.Identity() if cin == cout
                     else nn.Sequential(nn.Conv3d(cin, cout, 1), nn.BatchNorm3d(cout)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(N, cin, X, Y, Z) -> (N, cout, X, Y, Z)."""
        return self.relu(self.res(x) + self.skip(x))


class Upsample3DBlock(nn.Sequential):
    """ConvTranspose3d(k2, s2) + BN + ReLU: doubles every spatial size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.ConvTranspose3d(cin, cout, 2, stride=2), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class EncoderDecoder(nn.Module):
    """Two pooling levels (w -> 2w -> 4w) and back, with residual skip connections."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d(2)
        self.encoder_res1 = Res3DBlock(w, 2 * w)
        self.encoder_res2 = Res3DBlock(2 * w, 4 * w)
        self.mid_res = Res3DBlock(4 * w, 4 * w)
        self.decoder_res2 = Res3DBlock(4 * w, 4 * w)
        self.decoder_upsample2 = Upsample3DBlock(4 * w, 2 * w)
        self.decoder_res1 = Res3DBlock(2 * w, 2 * w)
        self.decoder_upsample1 = Upsample3DBlock(2 * w, w)
        self.skip_res1 = Res3DBlock(w, w)
        self.skip_res2 = Res3DBlock(2 * w, 2 * w)

    def forward(self, x: Tensor) -> Tensor:
        """(N, w, X, Y, Z) -> (N, w, X, Y, Z); X, Y, Z divisible by 4."""
        skip1 = self.skip_res1(x)
        x = self.encoder_res1(self.pool(x))
        skip2 = self.skip_res2(x)
        x = self.mid_res(self.encoder_res2(self.pool(x)))
        x = self.decoder_upsample2(self.decoder_res2(x)) + skip2
        return self.decoder_upsample1(self.decoder_res1(x)) + skip1


class V2VNet(nn.Module):
    """Volumetric net: (N, in_channels, X, Y, Z) -> (N, out_channels, X, Y, Z), no output activation."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 32) -> None:
        super().__init__()
        half = max(width // 2, 1)
        self.front_layers = nn.Sequential(Basic3DBlock(in_channels, half, 7), Res3DBlock(half, width))
        self.encoder_decoder = EncoderDecoder(width)
        self.output_layer = nn.Conv3d(width, out_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(N, Cin, X, Y, Z) -> (N, Cout, X, Y, Z). Raises ValueError if a spatial size is not a multiple of 4."""
        if any(s % 4 for s in x.shape[2:]):
            raise ValueError(f"V2VNet: voxel grid {tuple(x.shape[2:])} must be divisible by 4 on every axis "
                             "(model.root_space.voxels / model.pose_cube_voxels)")
        return self.output_layer(self.encoder_decoder(self.front_layers(x)))
