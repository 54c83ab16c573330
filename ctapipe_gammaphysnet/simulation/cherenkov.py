"""Cherenkov light from emission points to a telescope mirror.

Electromagnetic bunches: the photons of a bunch leave on cones of the local Cherenkov angle θc
around electron directions spread by σ about the sub-shower axis; the photon density per solid
angle at angle ψ from the axis is that ring convolved with a 2-D Gaussian of width σ,
``exp(-(ψ-θc)²/2σ²) I0(ψ θc/σ²) / 2πσ²`` (scaled Bessel function, stable for small σ). The mirror,
seen from the bunch under solid angle ``A cos(i) / D²``, collects that fraction, reduced by the
atmospheric transmission along the path. The photon direction is the line from the emission point to
the mirror, so the image geometry (position, elongation, parallax with impact distance) and arrival
times (path lengths) follow from geometry alone.

Muons: each muon's cone is followed exactly; for points along the track the part of the cone's
circle that falls on the mirror disc is an arc, and photons are placed on it (rings and arcs).
"""
import astropy.units as u
import numpy as np
from astropy.coordinates.matrix_utilities import rotation_matrix
from numba import njit
from scipy.special import i0e

from .atmosphere import cherenkov_yield_per_metre, refractive_index_at, transmission_at
from .primaries import perpendicular_basis, sky_direction
from .showers import MUON_ENERGY_LOSS, MUON_MASS, SPEED_OF_LIGHT

__all__ = ["TelescopeView", "bunch_light", "muon_light", "LightOnMirror"]

# muons further than this from a telescope (m) send it negligible light within its field of view
MUON_MAX_DISTANCE = 250.0


class LightOnMirror:
    """Photons reaching one mirror: direction in the TelescopeFrame (deg), number, arrival time (ns)."""

    def __init__(self, fov_lon, fov_lat, photons, time):
        self.fov_lon = fov_lon
        self.fov_lat = fov_lat
        self.photons = photons
        self.time = time

    @classmethod
    def concatenate(cls, parts):
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("fov_lon", "fov_lat", "photons", "time")))


@njit(cache=True)
def _fov_coordinates(to_telescope_frame, x, y, z):
    """TelescopeFrame (fov_lon, fov_lat) in degrees of a GroundFrame unit vector to the sky."""
    r = to_telescope_frame
    local_x = r[0, 0] * x + r[0, 1] * y + r[0, 2] * z
    local_y = r[1, 0] * x + r[1, 1] * y + r[1, 2] * z
    local_z = r[2, 0] * x + r[2, 1] * y + r[2, 2] * z
    return np.degrees(np.arctan2(local_y, local_x)), np.degrees(np.arcsin(min(max(local_z, -1.0), 1.0)))


@njit(cache=True)
def _fov_coordinates_array(to_telescope_frame, to_sky):
    fov_lon = np.empty(len(to_sky))
    fov_lat = np.empty(len(to_sky))
    for k in range(len(to_sky)):
        x, y, z = to_sky[k]
        fov_lon[k], fov_lat[k] = _fov_coordinates(to_telescope_frame, x, y, z)
    return fov_lon, fov_lat


@njit(cache=True)
def _bunch_light(
    layers, index_per_density, telescope_position, telescope_height, pointing, mirror_area,
    to_telescope_frame, position, axis, angular_spread, height, photons, time,
):
    """Per bunch: direction of the light in the TelescopeFrame, photons on the mirror before the
    Bessel factor, the argument of that factor ψθc/σ², and the arrival time (see `bunch_light`)."""
    n = len(photons)
    fov_lon, fov_lat = np.empty(n), np.empty(n)
    on_mirror, bessel_argument, arrival = np.empty(n), np.empty(n), np.empty(n)
    for b in range(n):
        dx = telescope_position[0] - position[b, 0]
        dy = telescope_position[1] - position[b, 1]
        dz = telescope_position[2] - position[b, 2]
        distance = np.sqrt(dx * dx + dy * dy + dz * dz)
        dx, dy, dz = dx / distance, dy / distance, dz / distance
        cos_psi = dx * axis[b, 0] + dy * axis[b, 1] + dz * axis[b, 2]
        psi = np.arccos(min(max(cos_psi, -1.0), 1.0))
        theta_c = np.arccos(min(1.0 / refractive_index_at(layers, index_per_density, height[b]), 1.0))
        sigma2 = angular_spread[b] ** 2
        bessel_argument[b] = psi * theta_c / sigma2
        cos_incidence = max(-(dx * pointing[0] + dy * pointing[1] + dz * pointing[2]), 0.0)
        on_mirror[b] = (
            photons[b]
            * np.exp(-((psi - theta_c) ** 2) / (2 * sigma2))
            / (2 * np.pi * sigma2)
            * mirror_area
            * cos_incidence
            / distance**2
            * transmission_at(layers, height[b], telescope_height, -dz)
        )
        mean_index = refractive_index_at(layers, index_per_density, 0.5 * (height[b] + telescope_height))
        arrival[b] = time[b] + distance * mean_index / SPEED_OF_LIGHT
        fov_lon[b], fov_lat[b] = _fov_coordinates(to_telescope_frame, -dx, -dy, -dz)
    return fov_lon, fov_lat, on_mirror, bessel_argument, arrival


class TelescopeView:
    """A telescope's position (GroundFrame, m), pointing and mirror."""

    def __init__(self, position, pointing_alt, pointing_az, mirror_area, observation_level):
        self.position = np.asarray(position, dtype=float)
        self.height = observation_level + self.position[2]
        self.mirror_area = mirror_area
        self.mirror_radius = np.sqrt(mirror_area / np.pi)
        self.pointing = sky_direction(pointing_alt, pointing_az)
        # ctapipe's AltAz → TelescopeFrame rotation, applied to GroundFrame vectors (y west = -east)
        self.to_telescope_frame = (
            rotation_matrix(-pointing_alt * u.rad, "y")
            @ rotation_matrix(pointing_az * u.rad, "z")
            @ np.diag([1.0, -1.0, 1.0])
        )

    def fov_coordinates(self, to_sky):
        """TelescopeFrame (fov_lon, fov_lat) in degrees of GroundFrame unit vectors to the sky."""
        return _fov_coordinates_array(self.to_telescope_frame, np.ascontiguousarray(to_sky))


def bunch_light(bunches, telescope, atmosphere):
    """Photons of electromagnetic emission bunches reaching the telescope mirror."""
    fov_lon, fov_lat, photons, bessel_argument, time = _bunch_light(
        atmosphere.layers, atmosphere.index_per_density, telescope.position, telescope.height,
        telescope.pointing, telescope.mirror_area, telescope.to_telescope_frame, bunches.position,
        bunches.axis, bunches.angular_spread, bunches.height, bunches.photons, bunches.time,
    )
    # the scaled Bessel function of the ring convolved with the electrons' spread (see module doc)
    return LightOnMirror(fov_lon, fov_lat, photons * i0e(bessel_argument), time)


def muon_light(muons, telescope, atmosphere, rng, samples_per_muon=256):
    """Photons from muon tracks reaching the telescope mirror (rings for muons hitting it)."""
    pointing = telescope.pointing
    towards_plane = muons.direction @ pointing  # < 0 for down-going tracks
    # where each track crosses the mirror plane (perpendicular to the pointing, through the mirror)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_plane = ((telescope.position - muons.position) @ pointing) / towards_plane
    crossing = muons.position + muons.direction * to_plane[:, None]
    miss = np.linalg.norm(crossing - telescope.position, axis=1)
    theta_ground = np.arccos(atmosphere.cherenkov_cos_angle(telescope.height))
    useful = (
        (towards_plane < -0.5)
        & (to_plane > 0)
        & (miss < MUON_MAX_DISTANCE)
        & (muons.energy > atmosphere.cherenkov_threshold(telescope.height, MUON_MASS))
    )
    if not np.any(useful):
        return None
    position, direction = muons.position[useful], muons.direction[useful]
    energy, time, to_plane, crossing, miss = (
        muons.energy[useful],
        muons.time[useful],
        to_plane[useful],
        crossing[useful],
        miss[useful],
    )
    radius = telescope.mirror_radius

    # distances before the plane whose cone circle (radius ~ s tanθc) can touch the mirror disc;
    # θc is taken at the telescope, the margins cover its decrease with height
    tan_c = np.tan(theta_ground)
    s_near = np.maximum(miss - radius, 0.0) / tan_c * 0.8
    s_far = np.minimum((miss + radius) / tan_c * 1.5, to_plane)
    n = len(energy)
    k = samples_per_muon
    fraction_along = (np.arange(k) + rng.uniform(size=(n, k))) / k
    s = s_near[:, None] + (s_far - s_near)[:, None] * fraction_along
    step = ((s_far - s_near) / k)[:, None]
    point = crossing[:, None, :] - direction[:, None, :] * s[..., None]
    height = point[..., 2] + telescope.height - telescope.position[2]

    # ionisation losses since the muon's production point
    cos_zenith = np.maximum(-direction[:, 2], 0.05)[:, None]
    traversed = (
        atmosphere.vertical_depth(height)
        - atmosphere.vertical_depth(position[:, 2:3] + telescope.height - telescope.position[2])
    ) / cos_zenith
    muon_energy = energy[:, None] - MUON_ENERGY_LOSS * np.maximum(traversed, 0.0)
    beta = np.sqrt(np.clip(1 - (MUON_MASS / np.maximum(muon_energy, MUON_MASS)) ** 2, 0, 1))
    cos_c = atmosphere.cherenkov_cos_angle(height, beta)
    emits = (cos_c < 1.0) & (s > 0) & (s < to_plane[:, None])
    theta_c = np.arccos(np.minimum(cos_c, 1.0))

    # arc of the cone's circle inside the mirror disc (law of cosines)
    circle = s * np.tan(theta_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_half = (miss[:, None] ** 2 + circle**2 - radius**2) / (2 * circle * miss[:, None])
    half_width = np.where(cos_half <= -1, np.pi, np.arccos(np.clip(cos_half, -1, 1)))
    half_width = np.where(np.isfinite(cos_half) | (circle < radius), half_width, 0.0)
    photons = (
        cherenkov_yield_per_metre(np.sin(theta_c) ** 2) * step * half_width / np.pi * emits
    )

    # azimuth of the mirror centre around each track, in a basis perpendicular to the track
    first, second = perpendicular_basis(direction)
    to_mirror = telescope.position - crossing
    centre_azimuth = np.arctan2(
        np.einsum("ij,ij->i", to_mirror, second), np.einsum("ij,ij->i", to_mirror, first)
    )
    azimuth = centre_azimuth[:, None] + half_width * rng.uniform(-1, 1, size=(n, k))
    photon_direction = (
        np.cos(theta_c)[..., None] * direction[:, None, :]
        + np.sin(theta_c)[..., None]
        * (np.cos(azimuth)[..., None] * first[:, None, :] + np.sin(azimuth)[..., None] * second[:, None, :])
    )
    arrival = (
        time[:, None]
        + (to_plane[:, None] - s) / SPEED_OF_LIGHT
        + s / np.maximum(cos_c, 0.9) / SPEED_OF_LIGHT
    )
    keep = photons > 0
    fov_lon, fov_lat = telescope.fov_coordinates(-photon_direction[keep])
    return LightOnMirror(fov_lon, fov_lat, photons[keep], arrival[keep])
