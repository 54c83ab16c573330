"""The atmosphere seen by an air shower: density, depth, refractive index, transmission.

A CORSIKA five-layer model (US standard atmosphere parameters, CORSIKA user guide appendix D):
vertical overburden ``T(h) = a + b exp(-h / c)`` in the four lower layers, linear above 100 km.
Everything is plain numpy on heights in metres above sea level and depths in g/cm², because it is
evaluated for thousands of emission points per shower.
"""
import numpy as np
import astropy.units as u
from astropy.table import Table
from ctapipe.atmosphere import TableAtmosphereDensityProfile

__all__ = ["Atmosphere", "cherenkov_yield_per_metre"]

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


def cherenkov_yield_per_metre(sin2_theta):
    """Cherenkov photons (300-600 nm) per metre of a charged track for a given sin² of the angle."""
    return _FRANK_TAMM_300_600 * sin2_theta


class Atmosphere:
    """Five-layer exponential atmosphere with height-dependent refractive index and transmission."""

    def __init__(self, layers=_US_STANDARD):
        self.layers = np.asarray(layers, dtype=float)
        self._bounds = self.layers[:, 0]
        self._a, self._b, self._c = self.layers[:, 1], self.layers[:, 2], self.layers[:, 3]
        self._depth_at_bounds = self.vertical_depth(self._bounds)
        # depths at the upper boundaries of layers 0-3, ascending, for the inverse lookup
        self._depth_at_tops = self._depth_at_bounds[1:][::-1].copy()
        self._density_sea_level = float(self.density(0.0))

    def _layer(self, height):
        # layer i spans bounds[i] <= h < bounds[i + 1]; below 0 and above 100 km the outer ones
        return np.searchsorted(self._bounds[1:], height, side="right")

    def vertical_depth(self, height):
        """Vertical overburden (g/cm²) above ``height`` (m a.s.l.)."""
        height = np.asarray(height, dtype=float)
        i = self._layer(height)
        a, b, c = self._a[i], self._b[i], self._c[i]
        depth = np.where(i < 4, a + b * np.exp(-height / c), a - b * height / c)
        return np.maximum(depth, 0.0)

    def height(self, vertical_depth):
        """Height (m a.s.l.) where the vertical overburden is ``vertical_depth`` (g/cm²)."""
        depth = np.maximum(np.asarray(vertical_depth, dtype=float), 1e-9)
        # depth decreases with height: the layer is the last boundary with more depth above it
        i = 4 - np.searchsorted(self._depth_at_tops, depth, side="left")
        a, b, c = self._a[i], self._b[i], self._c[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            exponential = -c * np.log(np.maximum(depth - a, 1e-12) / b)
            linear = (a - depth) * c / b
        return np.where(i < 4, exponential, linear)

    def density(self, height):
        """Air density (g/cm³) at ``height`` (m a.s.l.)."""
        height = np.asarray(height, dtype=float)
        i = self._layer(height)
        b, c = self._b[i], self._c[i]
        # dT/dh in g/cm² per m, converted to g/cm³
        return np.where(i < 4, b / c * np.exp(-height / c), b / c) / 100.0

    def refractive_index(self, height):
        """Refractive index n(h) = 1 + (n0 - 1) ρ(h) / ρ(0)."""
        return 1.0 + _N_MINUS_ONE_SEA_LEVEL / self._density_sea_level * self.density(height)

    def cherenkov_cos_angle(self, height, beta=1.0):
        """cos of the Cherenkov angle, 1/(nβ); values > 1 mean below threshold."""
        return 1.0 / (self.refractive_index(height) * beta)

    def cherenkov_threshold(self, height, mass):
        """Total energy (same unit as ``mass``) above which a particle emits Cherenkov light."""
        n = self.refractive_index(height)
        return mass / np.sqrt(1.0 - 1.0 / n**2)

    def moliere_radius(self, height):
        """Molière radius (m) of air at ``height``: 9.6 g/cm² divided by the density."""
        return 9.6 / self.density(height) / 100.0

    def transmission(self, emission_height, observation_height, cos_zenith):
        """Fraction of Cherenkov photons surviving Rayleigh and aerosol extinction on the way down."""
        cos_zenith = np.maximum(cos_zenith, 0.05)
        slant_rayleigh = (
            self.vertical_depth(observation_height) - self.vertical_depth(emission_height)
        ) / cos_zenith
        aerosol = (
            _AEROSOL_DEPTH
            * (
                np.exp(-observation_height / _AEROSOL_SCALE_HEIGHT)
                - np.exp(-np.maximum(emission_height, observation_height) / _AEROSOL_SCALE_HEIGHT)
            )
            / cos_zenith
        )
        return np.exp(-slant_rayleigh / _RAYLEIGH_DEPTH - aerosol)

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
