"""γ-PhysNet: a physically inspired multi-task network for Cherenkov telescope images, as a ctapipe plugin."""

from .version import __version__

__all__ = ["__version__"]
