"""Primary particles thrown as CORSIKA does: power-law energy, view cone, scatter radius, first interaction.

Directions are unit vectors in ctapipe's `GroundFrame` (x north, y west, z up) pointing *to the sky*
(where the particle comes from); the shower travels along the opposite vector.
"""
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..constants import ELECTRON_ID, GAMMA_ID, PROTON_ID

__all__ = [
    "PARTICLES",
    "Primary",
    "PrimarySampler",
    "sky_direction",
    "alt_az_from_direction",
    "offset_direction",
    "rotate_away",
    "perpendicular_basis",
]

# CORSIKA/sim_telarray primary ids as written in `true_shower_primary_id`
PARTICLES = {
    "gamma": GAMMA_ID,
    "gamma-diffuse": GAMMA_ID,
    "electron": ELECTRON_ID,
    "proton": PROTON_ID,
}

RADIATION_LENGTH = 36.7  # g/cm² in air
# proton-air inelastic cross-section 290 mb at 1 TeV rising ~30 mb per decade; λ = 24160 g/cm² mb / σ
_AIR_NUCLEON_DEPTH = 24160.0


def sky_direction(alt, az):
    """Unit vector to (alt, az) in radians, in the GroundFrame (x north, y west, z up)."""
    cos_alt = np.cos(alt)
    return np.stack([cos_alt * np.cos(az), -cos_alt * np.sin(az), np.sin(alt)], axis=-1)


def alt_az_from_direction(direction):
    """Inverse of `sky_direction`; returns (alt, az) in radians, az in [0, 2π)."""
    alt = np.arcsin(np.clip(direction[..., 2], -1, 1))
    az = np.mod(np.arctan2(-direction[..., 1], direction[..., 0]), 2 * np.pi)
    return alt, az


def offset_direction(alt, az, offset, position_angle):
    """(alt, az) of the point ``offset`` away from (alt, az) at ``position_angle`` (radians,
    scalars or arrays that broadcast).

    The position angle is measured from the direction of increasing altitude (towards the zenith)
    towards increasing azimuth: 0 is above the pointing, π/2 at larger azimuth, in ctapipe's
    `TelescopeFrame` of that pointing (fov_lat, fov_lon) = offset (cos, sin) of the angle for
    small offsets.
    """
    cos_alt, sin_alt = np.cos(alt), np.sin(alt)
    cos_az, sin_az = np.cos(az), np.sin(az)
    # d/d(alt) and d/d(az) / cos(alt) of `sky_direction`: the local unit vectors of the sky
    towards_zenith = np.stack([-sin_alt * cos_az, sin_alt * sin_az, cos_alt], axis=-1)
    towards_azimuth = np.stack([-sin_az, -cos_az, np.zeros_like(sin_az)], axis=-1)
    offset = np.asarray(offset)[..., np.newaxis]  # broadcast over the vector's components
    position_angle = np.asarray(position_angle)[..., np.newaxis]
    turned = np.cos(offset) * sky_direction(alt, az) + np.sin(offset) * (
        np.cos(position_angle) * towards_zenith + np.sin(position_angle) * towards_azimuth
    )
    return alt_az_from_direction(turned)


@njit(cache=True)
def perpendicular_basis(direction):
    """Two unit vectors completing (n, 3) unit vectors ``direction`` to orthonormal bases."""
    first = np.empty_like(direction)
    second = np.empty_like(direction)
    for k in range(len(direction)):
        x, y, z = direction[k, 0], direction[k, 1], direction[k, 2]
        # cross product with the z axis, or with the x axis for nearly vertical directions
        if abs(z) >= 0.9:
            f0, f1, f2 = 0.0, z, -y
        else:
            f0, f1, f2 = y, -x, 0.0
        norm = np.sqrt(f0 * f0 + f1 * f1 + f2 * f2)
        f0, f1, f2 = f0 / norm, f1 / norm, f2 / norm
        first[k, 0], first[k, 1], first[k, 2] = f0, f1, f2
        second[k, 0] = y * f2 - z * f1
        second[k, 1] = z * f0 - x * f2
        second[k, 2] = x * f1 - y * f0
    return first, second


@njit(cache=True)
def _rotate_away(direction, angle, position_angle):
    first, second = perpendicular_basis(direction)
    rotated = np.empty_like(direction)
    for k in range(len(direction)):
        cos_angle, sin_angle = np.cos(angle[k]), np.sin(angle[k])
        cos_position, sin_position = np.cos(position_angle[k]), np.sin(position_angle[k])
        for d in range(3):
            rotated[k, d] = cos_angle * direction[k, d] + sin_angle * (
                cos_position * first[k, d] + sin_position * second[k, d]
            )
    return rotated


def rotate_away(direction, angle, position_angle):
    """Turn unit vectors ``direction`` by ``angle`` towards ``position_angle`` (radians, vectorised)."""
    direction = np.ascontiguousarray(np.atleast_2d(direction), dtype=float)
    n = len(direction)
    return _rotate_away(direction, _per_vector(angle, n), _per_vector(position_angle, n))


def _per_vector(value, n):
    """``value`` (scalar or (n,)) as a contiguous float array of length n."""
    if np.ndim(value) == 0:
        return np.full(n, value, dtype=float)
    return np.ascontiguousarray(value, dtype=float)


def first_interaction_depth_mean(particle, energy):
    """Mean free path (g/cm²) before the first interaction of a primary of ``energy`` (TeV)."""
    if particle == "proton":
        cross_section = 290.0 + 30.0 * np.log10(energy)  # mb
        return _AIR_NUCLEON_DEPTH / cross_section
    if particle == "electron":
        return RADIATION_LENGTH
    # photon: pair-production mean free path 9/7 X0
    return 9.0 / 7.0 * RADIATION_LENGTH


@dataclass
class Primary:
    """One thrown primary particle (units: TeV, radians, metres, g/cm²)."""

    particle: str
    energy: float
    alt: float
    az: float
    core_x: float
    core_y: float
    first_interaction_depth: float  # slant depth along the axis

    @property
    def primary_id(self):
        return PARTICLES[self.particle]

    @property
    def direction(self):
        return sky_direction(self.alt, self.az)


class PrimarySampler:
    """Draws primaries like CORSIKA's ERANGE/ESLOPE, VIEWCONE and CSCAT options."""

    def __init__(
        self,
        particle,
        energy_min,
        energy_max,
        spectral_index,
        max_impact,
        view_cone,
        centre_alt,
        centre_az,
    ):
        self.particle = particle
        self.energy_min = energy_min
        self.energy_max = energy_max
        self.spectral_index = spectral_index
        self.max_impact = max_impact
        self.view_cone = view_cone
        #: axis of the view cone (radians): the pointing or the source (see `ShowerSimulator`)
        self.centre_direction = sky_direction(centre_alt, centre_az)

    def sample_energy(self, rng):
        """Power law dN/dE ∝ E^index between the limits (TeV), by inverting its CDF."""
        u = rng.uniform()
        g = self.spectral_index + 1.0
        if abs(g) < 1e-9:
            return self.energy_min * (self.energy_max / self.energy_min) ** u
        lo, hi = self.energy_min**g, self.energy_max**g
        return (lo + u * (hi - lo)) ** (1.0 / g)

    def sample(self, rng):
        energy = self.sample_energy(rng)
        direction = self.centre_direction
        if self.view_cone > 0:
            # uniform in solid angle inside the cone around its axis, whatever that axis is
            cos_max = np.cos(self.view_cone)
            angle = np.arccos(1.0 - rng.uniform() * (1.0 - cos_max))
            direction = rotate_away(direction, angle, rng.uniform(0, 2 * np.pi))[0]
        alt, az = alt_az_from_direction(direction)
        # cores uniform over a disc in the plane perpendicular to the shower axis
        # (sim_telarray's default), projected on to the ground along the axis
        radius = self.max_impact * np.sqrt(rng.uniform())
        offset = rotate_away(direction, np.pi / 2, rng.uniform(0, 2 * np.pi))[0] * radius
        core = offset - direction * offset[2] / direction[2]
        depth = rng.exponential(first_interaction_depth_mean(self.particle, energy))
        return Primary(
            particle=self.particle,
            energy=float(energy),
            alt=float(alt),
            az=float(az),
            core_x=float(core[0]),
            core_y=float(core[1]),
            first_interaction_depth=float(depth),
        )
