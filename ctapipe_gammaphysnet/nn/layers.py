"""Building blocks of γ-PhysNet on a camera grid (see ``ctapipe_gammaphysnet.geometry``)."""
import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import hexagonal_kernel_mask

__all__ = ["HexConv2d", "DualAttention", "PreActBlock", "Stage"]


class HexConv2d(nn.Conv2d):
    """3×3 convolution whose taps are the pixel and its hexagonal neighbours (7 taps).

    On an axial grid the two masked corners are not neighbours, so this is exactly a convolution on
    the hexagonal pixels. ``hexagonal=False`` keeps all nine taps for square-pixel cameras.
    With stride 2 the output cells sit on the even cells, again a hexagonal lattice.
    """

    def __init__(self, in_channels, out_channels, stride=1, hexagonal=True, bias=False):
        super().__init__(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.register_buffer("tap_mask", torch.from_numpy(hexagonal_kernel_mask(hexagonal)))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.tap_mask, self.bias, self.stride, self.padding)


class DualAttention(nn.Module):
    """Channel attention (squeeze-excitation) × (1 + spatial attention map).

    The spatial map (B, 1, H, W) is the output of ``self.spatial``: forward hooks on it give the
    attention maps shown on the camera.
    """

    def __init__(self, channels, reduction=16):
        super().__init__()
        hidden = max(channels // reduction, 2)
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.spatial = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.channel(x) * (1 + self.spatial(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (BN → ReLU → conv, twice) with hexagonal convolutions."""

    def __init__(self, in_channels, out_channels, stride=1, hexagonal=True):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = HexConv2d(in_channels, out_channels, stride, hexagonal)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = HexConv2d(out_channels, out_channels, 1, hexagonal)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            # a 1×1 convolution keeps the stride-2 lattice of the main path
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + identity


class Stage(nn.Module):
    """Residual blocks at one resolution, then dual attention; cells outside the camera kept at 0.

    ``camera_mask`` is this stage's output mask (1, 1, H, W): zeroing the cells outside the camera
    after every block makes the network a convolution on the camera's pixels alone.
    """

    def __init__(self, in_channels, out_channels, n_blocks, stride, camera_mask, hexagonal=True,
                 attention=True, reduction=16):
        super().__init__()
        self.blocks = nn.ModuleList(
            PreActBlock(in_channels if i == 0 else out_channels, out_channels,
                        stride if i == 0 else 1, hexagonal)
            for i in range(n_blocks)
        )
        self.attention = DualAttention(out_channels, reduction) if attention else None
        self.register_buffer("camera_mask", camera_mask)

    def forward(self, x):
        for block in self.blocks:
            x = block(x) * self.camera_mask
        if self.attention is not None:
            x = self.attention(x) * self.camera_mask
        return x
