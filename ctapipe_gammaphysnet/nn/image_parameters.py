"""Hillas-style image parameters computed inside γ-PhysNet from its cleaned input.

The standard analysis estimates energy and direction from a dozen numbers of the cleaned image
(intensity, the moments of the light, leakage, the time gradient) and they transfer from
simulation to real data because they summarise the light the cleaning keeps. The network
computes the same numbers from its own input (``nn.inputs.CleanedInputs``) as differentiable
torch code, so that its heads start from what the forests know and refine it with the learned
features; the direction head places the source on the image's main axis, as the disp method does.

ctapipe's ``hillas_parameters`` is not used because it works on one image at a time in numpy;
these are the same definitions (charge-weighted moments of the cleaned pixels, ψ from the
covariance, skewness and kurtosis along the main axis, leakage in the outermost one and two pixel
rings) on a batch of grids, in camera units of the camera radius.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .inputs import neighbor_kernel

__all__ = ["ImageParameters", "INVARIANT_PARAMETERS", "AXIAL_PARAMETERS"]

#: parameters that do not change when the main axis is flipped (ψ → ψ + 180°)
INVARIANT_PARAMETERS = ("log10_intensity", "length", "width", "width_over_length", "r",
                        "leakage_1", "leakage_2", "log10_n_pixels", "log10_max_charge",
                        "abs_skewness", "kurtosis", "abs_time_slope")
#: parameters that change sign with the axis: what tells the image's head from its tail
AXIAL_PARAMETERS = ("skewness", "time_slope")
_EPS = 1e-6


class ImageParameters(nn.Module):
    """Per image: centroid, main-axis direction, length and the parameter vectors.

    ``forward(charge, time, mask)`` takes grids ``(B, 1, rows, cols)``: charge (p.e.), peak time
    (the input's relative time units) and the cleaning mask. Returns a dict with ``centroid`` and
    ``axis`` (B, 2), ``length`` (B,), ``invariant`` (B, len(INVARIANT_PARAMETERS)) and ``axial``
    (B, len(AXIAL_PARAMETERS)).
    """

    def __init__(self, grid, position):
        super().__init__()
        # pixel positions (2, rows × cols) in units of the camera radius, 0 outside the camera
        self.register_buffer("position", position.reshape(2, -1).clone(), persistent=False)
        camera = torch.from_numpy(grid.mask).float()[None, None]
        kernel = neighbor_kernel(grid)
        inner = F.conv2d(camera, kernel, padding=1) >= kernel.sum()
        ring_1 = camera * (~inner).float()
        ring_2 = torch.maximum(ring_1, (F.conv2d(ring_1, kernel, padding=1) > 0).float()) * camera
        self.register_buffer("rings", torch.cat([ring_1, ring_2], 1).flatten(2)[0],
                             persistent=False)

    @property
    def n_invariant(self):
        return len(INVARIANT_PARAMETERS)

    @property
    def n_axial(self):
        return len(AXIAL_PARAMETERS)

    def forward(self, charge, time, mask):
        weight = (charge * mask).flatten(1)  # (B, N)
        time = time.flatten(1)
        intensity = weight.sum(1).clamp(min=_EPS)
        x, y = self.position
        cx = (weight * x).sum(1) / intensity
        cy = (weight * y).sum(1) / intensity
        dx, dy = x - cx[:, None], y - cy[:, None]
        cxx = (weight * dx * dx).sum(1) / intensity
        cyy = (weight * dy * dy).sum(1) / intensity
        cxy = (weight * dx * dy).sum(1) / intensity
        # eigen-decomposition of the 2×2 covariance without atan2 (not an ONNX operator)
        half_difference = (cxx - cyy) / 2
        root = torch.sqrt(half_difference ** 2 + cxy ** 2 + _EPS ** 2)
        mean = (cxx + cyy) / 2
        length = torch.sqrt((mean + root).clamp(min=_EPS ** 2))
        width = torch.sqrt((mean - root).clamp(min=_EPS ** 2))
        cos_2psi = half_difference / root
        cos_psi = torch.sqrt(((1 + cos_2psi) / 2).clamp(min=0))
        sin_psi = torch.sqrt(((1 - cos_2psi) / 2).clamp(min=0)) * torch.where(cxy < 0, -1.0, 1.0)
        along = (dx * cos_psi[:, None] + dy * sin_psi[:, None]) / length[:, None]
        skewness = (weight * along ** 3).sum(1) / intensity
        kurtosis = (weight * along ** 4).sum(1) / intensity
        # the time gradient along the axis (time units per camera radius), as ctapipe's timing_slope
        moment = (weight * along * length[:, None])
        time_slope = (moment * time).sum(1) / (moment * along * length[:, None]).sum(1).clamp(min=_EPS)
        leakage = (weight[:, None] * self.rings).sum(2) / intensity[:, None]  # (B, 2)
        n_pixels = mask.flatten(1).sum(1)
        # (sqrt, not hypot: ONNX has no hypot operator)
        invariant = torch.stack([
            torch.log10(intensity), length, width, width / length, torch.sqrt(cx ** 2 + cy ** 2),
            leakage[:, 0], leakage[:, 1], torch.log10(n_pixels.clamp(min=1)),
            torch.log10(weight.amax(1).clamp(min=1)), skewness.abs(), kurtosis, time_slope.abs(),
        ], dim=1)
        return {
            "centroid": torch.stack([cx, cy], dim=1),
            "axis": torch.stack([cos_psi, sin_psi], dim=1),
            "length": length,
            "invariant": invariant,
            "axial": torch.stack([skewness, time_slope], dim=1),
        }
