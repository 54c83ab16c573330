"""The built-in physics-based air-shower simulator (atmosphere, showers, Cherenkov light, camera).

Command line: ``ctapipe-simulate-showers``; from Python: `simulate_to_file`.
"""
from pathlib import Path

import astropy.units as u
from traitlets.config import Config

from ..io.outputs import atomic_output
from .camera import CameraSimulator
from .runner import observations, write_dl1
from .simulator import ShowerSimulator

__all__ = ["simulate_to_file", "ShowerSimulator", "CameraSimulator", "lst1_subarray"]


def lst1_subarray():
    """The simulator's default subarray: LST-1 (ctapipe_io_lst's description, offline)."""
    from ctapipe_io_lst import LSTEventSource

    return LSTEventSource.create_subarray(tel_id=1)


def simulate_to_file(
    output, particle="gamma", n_showers=1000, seed=0, n_workers=1, overwrite=False, pointing_zeniths=(),
    **options
):
    """Simulate showers into the DL1 file ``output`` as ``ctapipe-simulate-showers`` does (same
    file for the same options) and return its path.

    ``options`` are traits of `ShowerSimulator` or `CameraSimulator` by name, e.g.
    ``energy_min=0.05`` (TeV, or a Quantity), ``max_impact=300``, ``view_cone=6``,
    ``nsb_rate=0.3``; ``subarray_path`` takes the subarray from a file (default: LST-1).
    ``pointing_zeniths`` (deg): one observation per zenith angle in the file (``write_dl1``).
    """
    from ctapipe.instrument import SubarrayDescription

    output = Path(output).expanduser().absolute()
    subarray = None
    config = Config()
    config.ShowerSimulator.particle = particle
    config.ShowerSimulator.seed = seed
    for name, value in options.items():
        if name == "subarray_path":
            subarray = SubarrayDescription.read(value)
        elif name in ShowerSimulator.class_trait_names(config=True):
            if name in ("energy_min", "energy_max") and not isinstance(value, u.Quantity):
                value = value * u.TeV
            config.ShowerSimulator[name] = value
        elif name in CameraSimulator.class_trait_names(config=True):
            config.CameraSimulator[name] = value
        else:
            raise ValueError(f"simulate_to_file: unknown simulation option {name!r}")
    simulator = ShowerSimulator(subarray or lst1_subarray(), config=config)
    with atomic_output(output, overwrite) as tmp:
        write_dl1(tmp, observations(simulator, n_showers, pointing_zeniths=pointing_zeniths), n_workers)
    return output
