"""Constants shared by the package.

Particle ids are those of the simulation truth (``true_shower_primary_id``, CORSIKA's numbering
as sim_telarray and ctapipe keep it). HDF5 paths are not repeated here: they are ctapipe's own,
imported from ``ctapipe.io.hdf5dataformat``.
"""

__all__ = ["GAMMA_ID", "ELECTRON_ID", "PROTON_ID", "PARTICLE_NAMES", "CHECKPOINT_NAME"]

#: CORSIKA ids of the primaries the package simulates and trains on
GAMMA_ID = 0
ELECTRON_ID = 1
PROTON_ID = 101

#: particle name of each id
PARTICLE_NAMES = {GAMMA_ID: "gamma", ELECTRON_ID: "electron", PROTON_ID: "proton"}

#: a training's checkpoint in its work directory (``--resume`` continues from it)
CHECKPOINT_NAME = "checkpoint.pt"
