"""What of a camera image enters γ-PhysNet: the input representations.

Real and simulated cameras differ most in the ~1 700 LST pixels without Cherenkov light (how the
night-sky background, the pulse shape and the extractor's window draw their charges and peak
times). A network that sees every pixel learns those statistics and carries them to real data, so
the default representation keeps only the light the image cleaning finds:

``"cleaned"``
    Tailcuts cleaning on the grid (picture / boundary thresholds and the minimum number of picture
    neighbours as ctapipe's ``tailcuts_clean`` with ``keep_isolated_pixels=False``), the mask
    dilated by ``mask_dilation`` rings. Channels: log1p(charge) inside the dilated mask, the peak
    time relative to the charge-weighted mean time of the cleaned pixels inside the cleaning mask
    itself (noise pulses carry no timing information), and the cleaning mask. Everything else is 0,
    so pixels outside the dilated mask cannot change the outputs unless they change the cleaning.
``"camera"``
    Every pixel's charge and peak time (models written before the cleaned representation).

Both are torch code inside the network, so training, inference and the ONNX export cannot diverge,
and the choice and its thresholds are stored with the architecture in the model file.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REPRESENTATIONS", "TIME_SCALE_NS", "TIME_CLIP", "ImageInputs", "CameraInputs",
           "CleanedInputs", "make_inputs", "describe_inputs", "neighbor_kernel"]

#: peak times enter relative to the image's mean time, in this unit (ns)
TIME_SCALE_NS = 10.0
#: and are clipped to ± this many units, so that stray pulses cannot dominate
TIME_CLIP = 5.0


def _finite_charge_and_time(image, peak_time):
    """Non-finite or negative charge → 0 (a broken pixel contributes nothing); non-finite time → 0
    with a flag, so it gets no weight in the mean time."""
    finite_charge = torch.isfinite(image)
    charge = torch.where(finite_charge, image, torch.zeros_like(image)).clamp(min=0)
    finite_time = torch.isfinite(peak_time)
    time = torch.where(finite_time, peak_time, torch.zeros_like(peak_time))
    return charge, time, finite_time


def _relative_time(time, weight):
    """Peak time relative to the ``weight``-weighted mean time, in ``TIME_SCALE_NS``, clipped."""
    mean_time = (weight * time).sum(-1, keepdim=True) / weight.sum(-1, keepdim=True).clamp(min=1e-6)
    return ((time - mean_time) / TIME_SCALE_NS).clamp(-TIME_CLIP, TIME_CLIP)


def neighbor_kernel(grid):
    """``(1, 1, 3, 3)`` kernel counting a grid cell's neighbours as ctapipe's neighbour matrix
    does: the six hexagonal taps, or the four edge-sharing squares (ctapipe does not count
    diagonal square pixels as neighbours)."""
    ring = torch.from_numpy(grid.kernel_mask.copy()).float()
    ring[1, 1] = 0
    if not grid.hexagonal:
        ring[0, 0] = ring[0, 2] = ring[2, 0] = ring[2, 2] = 0
    return ring[None, None]


class ImageInputs(nn.Module):
    """Charge and peak time ``(B, n_pixels)`` → network input on the grid ``(B, C, rows, cols)``."""

    n_channels = 0

    def __init__(self, grid):
        super().__init__()
        self.grid_shape = grid.shape
        # derived from the camera, which the model file stores itself: not part of the weights
        self.register_buffer("pixel_index", torch.from_numpy(grid.flat_index).long(),
                             persistent=False)

    def light_mask(self, inputs):
        """``(B, 1, rows, cols)``: 1 where the input has shower light, or None if it does not say."""
        return None

    def to_grid(self, pixel_values):
        """``(B, C, n_pixels)`` → ``(B, C, rows, cols)``, zeros outside the camera."""
        batch, channels, _ = pixel_values.shape
        grid = pixel_values.new_zeros(batch, channels, self.grid_shape[0] * self.grid_shape[1])
        grid[:, :, self.pixel_index] = pixel_values
        return grid.view(batch, channels, *self.grid_shape)


class CameraInputs(ImageInputs):
    """Every pixel: log1p(charge) and the time relative to the charge-weighted mean."""

    n_channels = 2

    def forward(self, image, peak_time):
        charge, time, finite_time = _finite_charge_and_time(image, peak_time)
        relative_time = _relative_time(time, charge * finite_time)
        relative_time = torch.where(finite_time, relative_time, torch.zeros_like(relative_time))
        return self.to_grid(torch.stack([torch.log1p(charge), relative_time], dim=1))


class CleanedInputs(ImageInputs):
    """The tailcuts-cleaned image, its peak times and the cleaning mask (see the module doc)."""

    n_channels = 3

    def __init__(self, grid, picture_threshold, boundary_threshold, min_picture_neighbors,
                 mask_dilation):
        super().__init__(grid)
        if not 0 <= boundary_threshold <= picture_threshold:
            raise ValueError("cleaning needs 0 <= boundary_threshold <= picture_threshold, got "
                             f"{boundary_threshold} and {picture_threshold}")
        if min_picture_neighbors < 0 or mask_dilation < 0:
            raise ValueError("min_picture_neighbors and mask_dilation must be >= 0")
        self.picture_threshold = float(picture_threshold)
        self.boundary_threshold = float(boundary_threshold)
        self.min_picture_neighbors = int(min_picture_neighbors)
        self.mask_dilation = int(mask_dilation)
        self.register_buffer("neighbor_kernel", neighbor_kernel(grid), persistent=False)
        self.register_buffer("camera_mask", torch.from_numpy(grid.mask).float()[None, None],
                             persistent=False)

    def light_mask(self, inputs):
        return inputs[:, 2:3]

    def cleaned_image(self, inputs):
        """Charge (p.e.), relative peak time and cleaning mask ``(B, 1, rows, cols)`` each, of
        the cleaned pixels, from this module's output."""
        mask = inputs[:, 2:3]
        # exp − 1, not expm1: ONNX has no expm1 operator
        return (torch.exp(inputs[:, :1]) - 1) * mask, inputs[:, 1:2], mask

    def _neighbor_count(self, cells):
        return F.conv2d(cells, self.neighbor_kernel, padding=1)

    def cleaning_mask(self, charge_grid):
        """Tailcuts cleaning of ``(B, 1, rows, cols)`` charges: 1 for kept pixels, else 0."""
        above_picture = (charge_grid >= self.picture_threshold).float() * self.camera_mask
        if self.min_picture_neighbors > 0:
            picture = above_picture * (
                self._neighbor_count(above_picture) >= self.min_picture_neighbors).float()
        else:
            picture = above_picture
        above_boundary = (charge_grid >= self.boundary_threshold).float() * self.camera_mask
        boundary = above_boundary * (self._neighbor_count(picture) > 0).float()
        kept_picture = picture * (self._neighbor_count(above_boundary) > 0).float()
        return torch.maximum(boundary, kept_picture)

    def dilate(self, mask):
        for _ in range(self.mask_dilation):
            mask = torch.maximum(mask, (self._neighbor_count(mask) > 0).float()) * self.camera_mask
        return mask

    def forward(self, image, peak_time):
        charge, time, finite_time = _finite_charge_and_time(image, peak_time)
        charge_grid = self.to_grid(charge[:, None])
        time_grid = self.to_grid(time[:, None])
        finite_grid = self.to_grid(finite_time[:, None].to(charge.dtype))
        mask = self.cleaning_mask(charge_grid)
        timed = mask * finite_grid
        relative_time = _relative_time(time_grid.flatten(1), (charge_grid * timed).flatten(1))
        relative_time = relative_time.view_as(time_grid) * timed
        return torch.cat([torch.log1p(charge_grid) * self.dilate(mask), relative_time, mask], dim=1)


#: representation name → what it is, for ``--help`` texts and the model file
REPRESENTATIONS = {
    "cleaned": "tailcuts-cleaned image (dilated), peak times inside the cleaning mask, the mask",
    "camera": "every pixel's charge and peak time",
}


def make_inputs(grid, config):
    """The input module of a `NetworkConfig`."""
    if config.inputs == "camera":
        return CameraInputs(grid)
    if config.inputs == "cleaned":
        return CleanedInputs(grid, config.picture_threshold, config.boundary_threshold,
                             config.min_picture_neighbors, config.mask_dilation)
    raise ValueError(f"unknown input representation {config.inputs!r}; "
                     f"known: {', '.join(REPRESENTATIONS)}")


def describe_inputs(config):
    """The input conventions of a `NetworkConfig`, as written into the model file."""
    time = (f"ns, relative to the charge-weighted mean, /{TIME_SCALE_NS:g}, clipped to "
            f"±{TIME_CLIP:g}; non-finite → 0")
    if config.inputs == "camera":
        return {"representation": "camera",
                "image": "charge per pixel (p.e.), camera pixel order; non-finite → 0; "
                         "log1p(max(q, 0))",
                "peak_time": time}
    cleaning = (f"tailcuts {config.picture_threshold:g}/{config.boundary_threshold:g} p.e., "
                f"{config.min_picture_neighbors} picture neighbours")
    return {"representation": "cleaned",
            "image": f"charge per pixel (p.e.), camera pixel order; non-finite → 0; "
                     f"log1p(max(q, 0)) inside the cleaning mask ({cleaning}) dilated by "
                     f"{config.mask_dilation} rings, else 0",
            "peak_time": f"{time}; mean over and values only inside the cleaning mask, else 0",
            "mask": f"1 inside the cleaning mask ({cleaning}), else 0"}
