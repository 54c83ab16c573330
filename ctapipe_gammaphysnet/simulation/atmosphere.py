"""The atmosphere seen by an air shower: density, depth, refractive index, transmission.

A CORSIKA five-layer model (US standard atmosphere parameters, CORSIKA user guide appendix D):
vertical overburden ``T(h) = a + b exp(-h / c)`` in the four lower layers, linear above 100 km.
Heights are metres above sea level, depths g/cm². The profile functions are scalar numba kernels
(`vertical_depth_at`, `height_at`, `density_at`) that the shower and light kernels call directly for
thousands of emission points per shower; `Atmosphere` applies them to arrays.
"""
import astropy.units as u
import numpy as np
from astropy.table import Table
from ctapipe.atmosphere import TableAtmosphereDensityProfile
from numba import njit

__all__ = [
    "Atmosphere",
    "cherenkov_threshold_of",
    "cherenkov_yield_per_metre",
    "density_at",
    "height_at",
    "refractive_index_at",
    "transmission_at",
    "vertical_depth_at",
]

# layer lower boundaries (m) and the a (g/cm²), b (g/cm²), c (m) parameters of CORSIKA atmosphere 1
_US_STANDARD = np.array(
    [
        [0.0, -186.555305, 1222.6562, 9941.8638],
        [4.0e3, -94.919, 1144.9069, 8781.5355],
        [1.0e4, 0.61289, 1305.5948, 6361.4304],
        [4.0e4, 0.0, 540.1778, 7721.7016],
        [1.0e5, 0.01128292, 1.0, 1.0e7],
    ]
)

# (n - 1) at sea level for the Cherenkov band (~400 nm); it scales with the density
_N_MINUS_ONE_SEA_LEVEL = 2.83e-4

# Rayleigh attenuation depth averaged over the Cherenkov spectrum seen by a PMT (g/cm²)
_RAYLEIGH_DEPTH = 2300.0
# aerosols: vertical optical depth above sea level and scale height (m)
_AEROSOL_DEPTH = 0.12
_AEROSOL_SCALE_HEIGHT = 1200.0

# number of Cherenkov photons between 300 and 600 nm per metre of track is this times sin²θ:
# 2π α (1/λ1 - 1/λ2)
_FRANK_TAMM_300_600 = 2 * np.pi / 137.036 * (1 / 300e-9 - 1 / 600e-9)


@njit(cache=True)
def cherenkov_yield_per_metre(sin2_theta):
    """Cherenkov photons (300-600 nm) per metre of a charged track for a given sin² of the angle."""
    return _FRANK_TAMM_300_600 * sin2_theta


@njit(cache=True)
def cherenkov_threshold_of(refractive_index, mass):
    """Total energy (same unit as ``mass``) above which a particle emits Cherenkov light."""
    return mass / np.sqrt(1.0 - 1.0 / refractive_index**2)


# Scalar kernels on the layer table (rows: lower boundary, a, b, c, vertical depth at the lower
# boundary), compiled with numba because
# they run for every emission point and depth step; the `Atmosphere` methods apply them to arrays.
@njit(cache=True)
def _layer(layers, height):
    # layer i spans bounds[i] <= h < bounds[i + 1]; below 0 and above 100 km the outer ones
    i = 0
    while i < 4 and height >= layers[i + 1, 0]:
        i += 1
    return i


@njit(cache=True)
def vertical_depth_at(layers, height):
    """Vertical overburden (g/cm²) above ``height`` (m a.s.l.)."""
    i = _layer(layers, height)
    a, b, c = layers[i, 1], layers[i, 2], layers[i, 3]
    depth = a + b * np.exp(-height / c) if i < 4 else a - b * height / c
    return max(depth, 0.0)


@njit(cache=True)
def height_at(layers, vertical_depth):
    """Height (m a.s.l.) where the vertical overburden is ``vertical_depth`` (g/cm²)."""
    depth = max(vertical_depth, 1e-9)
    # depth decreases with height: the layer is the highest one whose lower boundary has more depth
    i = 4
    while i > 0 and depth > layers[i, 4]:
        i -= 1
    a, b, c = layers[i, 1], layers[i, 2], layers[i, 3]
    if i < 4:
        return -c * np.log(max(depth - a, 1e-12) / b)
    return (a - depth) * c / b


@njit(cache=True)
def density_at(layers, height):
    """Air density (g/cm³) at ``height`` (m a.s.l.)."""
    i = _layer(layers, height)
    b, c = layers[i, 2], layers[i, 3]
    # dT/dh in g/cm² per m, converted to g/cm³
    return (b / c * np.exp(-height / c) if i < 4 else b / c) / 100.0


@njit(cache=True)
def refractive_index_at(layers, index_per_density, height):
    """Refractive index n(h) = 1 + (n0 - 1) ρ(h) / ρ(0); ``index_per_density`` = (n0 - 1) / ρ(0)."""
    return 1.0 + index_per_density * density_at(layers, height)


@njit(cache=True)
def transmission_at(layers, emission_height, observation_height, cos_zenith):
    """Fraction of Cherenkov photons surviving Rayleigh and aerosol extinction on the way down."""
    cos_zenith = max(cos_zenith, 0.05)
    slant_rayleigh = (
        vertical_depth_at(layers, observation_height) - vertical_depth_at(layers, emission_height)
    ) / cos_zenith
    aerosol = (
        _AEROSOL_DEPTH
        * (
            np.exp(-observation_height / _AEROSOL_SCALE_HEIGHT)
            - np.exp(-max(emission_height, observation_height) / _AEROSOL_SCALE_HEIGHT)
        )
        / cos_zenith
    )
    return np.exp(-slant_rayleigh / _RAYLEIGH_DEPTH - aerosol)


_VERTICAL_DEPTH, _HEIGHT, _DENSITY, _REFRACTIVE_INDEX = 0, 1, 2, 3


@njit(cache=True)
def _profile(quantity, layers, index_per_density, values):
    out = np.empty(values.size)
    for k in range(values.size):
        if quantity == _VERTICAL_DEPTH:
            out[k] = vertical_depth_at(layers, values[k])
        elif quantity == _HEIGHT:
            out[k] = height_at(layers, values[k])
        elif quantity == _DENSITY:
            out[k] = density_at(layers, values[k])
        else:
            out[k] = refractive_index_at(layers, index_per_density, values[k])
    return out


class Atmosphere:
    """Five-layer exponential atmosphere with height-dependent refractive index and transmission."""

    def __init__(self, layers=_US_STANDARD):
        layers = np.asarray(layers, dtype=float)
        depth_at_bounds = [vertical_depth_at(layers, height) for height in layers[:, 0]]
        self.layers = np.column_stack([layers, depth_at_bounds])
        # (n - 1) per unit density, the argument of `refractive_index_at`
        self.index_per_density = _N_MINUS_ONE_SEA_LEVEL / density_at(self.layers, 0.0)

    def _profile(self, quantity, values):
        values = np.asarray(values, dtype=float)
        return _profile(quantity, self.layers, self.index_per_density, values.ravel()).reshape(values.shape)

    def vertical_depth(self, height):
        """Vertical overburden (g/cm²) above ``height`` (m a.s.l.)."""
        return self._profile(_VERTICAL_DEPTH, height)

    def height(self, vertical_depth):
        """Height (m a.s.l.) where the vertical overburden is ``vertical_depth`` (g/cm²)."""
        return self._profile(_HEIGHT, vertical_depth)

    def density(self, height):
        """Air density (g/cm³) at ``height`` (m a.s.l.)."""
        return self._profile(_DENSITY, height)

    def refractive_index(self, height):
        """Refractive index n(h) = 1 + (n0 - 1) ρ(h) / ρ(0)."""
        return self._profile(_REFRACTIVE_INDEX, height)

    def cherenkov_cos_angle(self, height, beta=1.0):
        """cos of the Cherenkov angle, 1/(nβ); values > 1 mean below threshold."""
        return 1.0 / (self.refractive_index(height) * beta)

    def cherenkov_threshold(self, height, mass):
        """Total energy (same unit as ``mass``) above which a particle emits Cherenkov light."""
        return cherenkov_threshold_of(self.refractive_index(height), mass)

    def density_profile(self):
        """This atmosphere as ctapipe's `TableAtmosphereDensityProfile` (what sim_telarray files
        provide), tabulated every 2 km up to 100 km, for the output file."""
        height = np.arange(0.0, 100.1e3, 2e3)
        table = Table(
            {
                "height": (height * u.m).to(u.km),
                "density": self.density(height) * u.g / u.cm**3,
                "column_density": self.vertical_depth(height) * u.g / u.cm**2,
            }
        )
        return TableAtmosphereDensityProfile(table)
