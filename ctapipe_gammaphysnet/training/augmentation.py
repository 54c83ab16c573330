"""Training-time image augmentation: the camera conditions a simulation does not pin down.

Real cameras see more or less night-sky background than the simulation assumed, their pixels'
gains scatter, and their times jitter. The original γ-PhysNet added Poisson noise to the charges
to match the background of the data; this module draws, per training image, an extra background
level and applies it with a per-pixel gain spread and a time jitter, on the batch as torch
operations (the network's own input preparation then sees the changed image, as at inference).
"""
import torch
from ctapipe.core import Component
from ctapipe.core.traits import Float

__all__ = ["ImageAugmentation"]


class ImageAugmentation(Component):
    """Random extra night-sky background, gain spread and time jitter on training images."""

    extra_nsb_pe = Float(
        0.0,
        help="largest extra night-sky background (mean p.e. per pixel in the integration window); "
             "each image draws a level uniformly in [0, this] and every pixel a Poisson number of "
             "that mean, minus the mean (pedestal subtraction) (0: off)",
    ).tag(config=True)
    gain_spread = Float(
        0.0, help="relative Gaussian spread of the pixel gains applied to the charges (0: off)"
    ).tag(config=True)
    time_jitter_ns = Float(
        0.0, help="Gaussian jitter of the peak times (ns) (0: off)"
    ).tag(config=True)

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        for name in ("extra_nsb_pe", "gain_spread", "time_jitter_ns"):
            if getattr(self, name) < 0:
                raise ValueError(f"ImageAugmentation.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def enabled(self):
        return self.extra_nsb_pe > 0 or self.gain_spread > 0 or self.time_jitter_ns > 0

    def __call__(self, image, peak_time):
        """Augmented copies of a batch ``(B, n_pixels)`` of charges and peak times."""
        if not self.enabled:
            return image, peak_time
        if self.gain_spread > 0:
            image = image * (1 + self.gain_spread * torch.randn_like(image)).clamp(min=0)
        if self.extra_nsb_pe > 0:
            level = self.extra_nsb_pe * torch.rand(len(image), 1, device=image.device)
            image = image + torch.poisson(level.expand_as(image)) - level
        if self.time_jitter_ns > 0:
            peak_time = peak_time + self.time_jitter_ns * torch.randn_like(peak_time)
        return image, peak_time

    def settings(self):
        """The configuration, for the model file's training record."""
        return {name: getattr(self, name) for name in self.class_trait_names(config=True)}
