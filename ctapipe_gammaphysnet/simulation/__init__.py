"""The built-in physics-based air-shower simulator (atmosphere, showers, Cherenkov light, camera).

Command line: ``ctapipe-simulate-showers``; from Python: `simulate_to_file`.
"""
from pathlib import Path

import astropy.units as u
from traitlets.config import Config

from .camera import CameraSimulator
from .simulator import ShowerSimulator

__all__ = ["simulate_to_file", "ShowerSimulator", "CameraSimulator"]


def simulate_to_file(
    output, particle="gamma", n_showers=1000, seed=0, n_workers=1, overwrite=False, **options
):
    """Run ``ctapipe-simulate-showers`` in this process and return the output path.

    ``options`` are traits of `ShowerSimulator` or `CameraSimulator` by name, e.g.
    ``energy_min=0.05`` (TeV, or a Quantity), ``max_impact=300``, ``view_cone=6``,
    ``nsb_rate=0.3``; ``subarray_path`` takes the subarray from a file.
    """
    from ctapipe.core import run_tool

    from ..tools.simulate_showers import SimulateShowers

    output = Path(output).expanduser().absolute()
    config = Config()
    config.SimulateShowers.output_path = str(output)
    config.SimulateShowers.n_showers = n_showers
    config.SimulateShowers.n_workers = n_workers
    config.SimulateShowers.overwrite = overwrite
    config.SimulateShowers.progress_bar = False
    config.ShowerSimulator.particle = particle
    config.ShowerSimulator.seed = seed
    for name, value in options.items():
        if name == "subarray_path":
            config.SimulateShowers.subarray_path = str(value)
        elif name in ShowerSimulator.class_trait_names(config=True):
            if name in ("energy_min", "energy_max") and not isinstance(value, u.Quantity):
                value = value * u.TeV
            config.ShowerSimulator[name] = value
        elif name in CameraSimulator.class_trait_names(config=True):
            config.CameraSimulator[name] = value
        else:
            raise ValueError(f"simulate_to_file: unknown simulation option {name!r}")
    run_tool(SimulateShowers(config=config), argv=["--log-level=WARN"], raises=True)
    return output
