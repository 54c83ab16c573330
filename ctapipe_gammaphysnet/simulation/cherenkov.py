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
from scipy.special import i0e

from .atmosphere import cherenkov_yield_per_metre
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


class TelescopeView:
    """A telescope's position (GroundFrame, m), pointing and mirror."""

    def __init__(self, position, pointing_alt, pointing_az, mirror_area, observation_level):
        self.position = np.asarray(position, dtype=float)
        self.height = observation_level + self.position[2]
        self.mirror_area = mirror_area
        self.mirror_radius = np.sqrt(mirror_area / np.pi)
        self.pointing = sky_direction(pointing_alt, pointing_az)
        # ctapipe's AltAz → TelescopeFrame rotation, applied to GroundFrame vectors (y west = -east)
        self._to_telescope_frame = (
            rotation_matrix(-pointing_alt * u.rad, "y")
            @ rotation_matrix(pointing_az * u.rad, "z")
            @ np.diag([1.0, -1.0, 1.0])
        )

    def fov_coordinates(self, to_sky):
        """TelescopeFrame (fov_lon, fov_lat) in degrees of GroundFrame unit vectors to the sky."""
        local = to_sky @ self._to_telescope_frame.T
        fov_lon = np.degrees(np.arctan2(local[:, 1], local[:, 0]))
        fov_lat = np.degrees(np.arcsin(np.clip(local[:, 2], -1, 1)))
        return fov_lon, fov_lat


def bunch_light(bunches, telescope, atmosphere):
    """Photons of electromagnetic emission bunches reaching the telescope mirror."""
    to_mirror = telescope.position - bunches.position
    distance = np.linalg.norm(to_mirror, axis=1)
    propagation = to_mirror / distance[:, None]

    psi = np.arccos(np.clip(np.einsum("ij,ij->i", propagation, bunches.axis), -1, 1))
    theta_c = np.arccos(np.minimum(atmosphere.cherenkov_cos_angle(bunches.height), 1.0))
    sigma2 = bunches.angular_spread**2
    density = (
        np.exp(-((psi - theta_c) ** 2) / (2 * sigma2))
        * i0e(psi * theta_c / sigma2)
        / (2 * np.pi * sigma2)
    )
    cos_incidence = np.maximum(-propagation @ telescope.pointing, 0.0)
    transmission = atmosphere.transmission(bunches.height, telescope.height, -propagation[:, 2])
    photons = (
        bunches.photons * density * telescope.mirror_area * cos_incidence / distance**2 * transmission
    )
    mean_index = atmosphere.refractive_index(0.5 * (bunches.height + telescope.height))
    time = bunches.time + distance * mean_index / SPEED_OF_LIGHT
    fov_lon, fov_lat = telescope.fov_coordinates(-propagation)
    return LightOnMirror(fov_lon, fov_lat, photons, time)


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
