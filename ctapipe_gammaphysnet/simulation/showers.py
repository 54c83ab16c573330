"""Air-shower development: electromagnetic sub-showers, the hadronic cascade and its muons.

A shower is reduced to what makes Cherenkov light:

* `EmissionBunches`: weighted points where the charged particles of electromagnetic (sub-)showers
  emit, sampled from Greisen's longitudinal profile, with the lateral offset and the angular spread
  of the emitting electrons (these decide which telescopes see the light and how wide the image is);
* `Muons`: straight tracks from charged-pion decays, whose light is followed exactly (rings, arcs).

Positions are metres in the `GroundFrame` (z above the observation level), directions are unit
vectors of propagation (downwards), times are ns relative to the primary reaching the ground core
at the speed of light, energies GeV.
"""
from collections import namedtuple
from dataclasses import dataclass

import numpy as np
from numba import njit

from .atmosphere import (
    cherenkov_threshold_of,
    cherenkov_yield_per_metre,
    density_at,
    height_at,
    refractive_index_at,
    vertical_depth_at,
)
from .primaries import RADIATION_LENGTH, perpendicular_basis, rotate_away

__all__ = ["EmissionBunches", "Muons", "ShowerModel", "SPEED_OF_LIGHT"]

SPEED_OF_LIGHT = 0.299792458  # m/ns
ELECTRON_MASS = 0.511e-3  # GeV
MUON_MASS = 0.10566  # GeV
PION_MASS = 0.13957  # GeV
PION_DECAY_LENGTH = 7.80  # cτ of a charged pion, m
CRITICAL_ENERGY = 0.086  # GeV, electromagnetic critical energy of air
MUON_ENERGY_LOSS = 2.2e-3  # GeV per g/cm², ionisation of a minimum-ionising muon
PION_INTERACTION_LENGTH = 120.0  # g/cm²
MINIMUM_HADRON_ENERGY = 1.0  # GeV; below this hadrons add little light and are not followed
MINIMUM_EM_ENERGY = 0.3  # GeV; lighter electromagnetic sub-showers stay under the LST threshold
NUCLEON, CHARGED_PION = 0, 1
# share of secondaries decaying at once into photons: π0 (1/3) plus η and neutral kaons
NEUTRAL_FRACTION = 0.4

# Dirichlet(α) sharing of an interaction's energy: each of n secondaries gets a fraction x following
# Beta(α, α(n-1)) ~ x^(α-1) (1-x)^(α n), close to the Feynman-scaling spectrum dN/dx ~ (1-x)^4 / x
# of accelerator data: a few fast secondaries carry most of the energy (α = 1, flat sharing, gave
# every pion ~E/n, so that at the heights of the first interactions nearly all of them decayed)
SHARE_SHAPE = 0.25

# narrowest angular spread of a bunch (rad): keeps the ring density finite for barely scattered electrons
MINIMUM_SPREAD = 2e-3

# Greisen profiles are evaluated on this many depth steps per sub-shower
_PROFILE_STEPS = 48


def _cherenkov_electron_table():
    """Cherenkov-emitting electrons per shower particle, from the age-dependent energy spectrum of
    Nerling et al. (2006): the fraction above the threshold energy E_th, each weighted by its
    Frank-Tamm yield relative to β = 1, (1 - (E_th/E)²). Tabulated in (age, log10 E_th/MeV)."""
    ages = np.linspace(0.2, 2.0, 37)
    log_thresholds = np.linspace(np.log10(10.0), np.log10(400.0), 40)
    log_e = np.linspace(0.0, 6.0, 1200)  # 1 MeV .. 1 TeV
    energy = 10**log_e
    a1 = np.maximum(6.42522 - 1.53183 * ages, 0.1)[:, None]
    a2 = np.maximum(168.168 - 42.1368 * ages, 1.0)[:, None]
    # spectrum per d ln E, normalised to all particles above 1 MeV
    spectrum = energy / ((energy + a1) * (energy + a2) ** ages[:, None])
    spectrum /= spectrum.sum(axis=1, keepdims=True)
    threshold = 10 ** log_thresholds[None, :, None]
    weight = np.clip(1 - (threshold / energy[None, None, :]) ** 2, 0, None)
    fraction = (spectrum[:, None, :] * weight).sum(axis=2)
    return ages, log_thresholds, fraction


# a regular 2-D grid of values for `_bilinear` (a named tuple so that numba kernels take it)
_RegularTable = namedtuple("_RegularTable", "x0 dx y0 dy values")


def _regular_table(x, y, values):
    return _RegularTable(x[0], x[1] - x[0], y[0], y[1] - y[0], np.ascontiguousarray(values, dtype=float))


@njit(cache=True)
def _bilinear(table, x, y):
    """Bilinear interpolation (linear extrapolation) in a `_RegularTable`."""
    f = table.values
    u = (x - table.x0) / table.dx
    v = (y - table.y0) / table.dy
    i = min(max(int(u), 0), f.shape[0] - 2)
    j = min(max(int(v), 0), f.shape[1] - 2)
    u -= i
    v -= j
    return (f[i, j] * (1 - u) + f[i + 1, j] * u) * (1 - v) + (f[i, j + 1] * (1 - u) + f[i + 1, j + 1] * u) * v


_CHERENKOV_FRACTION = _regular_table(*_cherenkov_electron_table())

_LOG_U_MIN = -25.0


def _emitting_energy_quantiles():
    """ln(E_th/E) of emitting electrons as a function of (age s, ln u), u uniform in (0, 1]: with
    x = E_th/E the spectrum ~E^-(1+s) weighted by (1 - x²) is p(x) ~ x^(s-1) (1 - x²), whose
    distribution function F(x) = (x^s/s - x^(s+2)/(s+2)) / (1/s - 1/(s+2)) is inverted on a grid
    (ln u is used because x ~ u^(1/s) spans decades near u = 0)."""
    ages = np.linspace(0.4, 2.0, 33)[:, None]
    log_x = np.linspace(_LOG_U_MIN, 0.0, 4000)[None, :]
    x = np.exp(log_x)
    log_cdf = np.log(x**ages / ages - x ** (ages + 2) / (ages + 2)) - np.log(1 / ages - 1 / (ages + 2))
    log_u = np.linspace(_LOG_U_MIN, 0.0, 600)
    table = np.array([np.interp(log_u, row_cdf, log_x[0]) for row_cdf in log_cdf])
    return ages[:, 0], log_u, table


_EMITTING_ENERGY_QUANTILES = _regular_table(*_emitting_energy_quantiles())


# --- numba kernels: the per-step and per-bunch loops of electromagnetic sub-showers -----------
# (a shower has hundreds to thousands of bunches; as numpy code the per-call overhead of many small
# array operations dominated). Random numbers are drawn by the caller from the shower's Generator.
@njit(cache=True)
def _path_length(layers, observation_level, ground_depth, z, direction_z, slant_depth):
    """Path length (m) along a direction of vertical component ``direction_z`` from height ``z``
    (GroundFrame) through ``slant_depth`` g/cm², stopping at the ground; and whether it got there."""
    cos_zenith = max(-direction_z, 0.05)
    height = z + observation_level
    depth = vertical_depth_at(layers, height) + slant_depth * cos_zenith
    return (height - height_at(layers, min(depth, ground_depth))) / cos_zenith, depth >= ground_depth


@njit(cache=True)
def _path_lengths(layers, observation_level, ground_depth, z, direction_z, slant_depth):
    length = np.empty(z.size)
    reached_ground = np.empty(z.size, dtype=np.bool_)
    for k in range(z.size):
        length[k], reached_ground[k] = _path_length(
            layers, observation_level, ground_depth, z[k], direction_z[k], slant_depth[k]
        )
    return length, reached_ground


@njit(cache=True)
def _greisen_profiles(
    layers, index_per_density, observation_level, ground_depth, energy, start_z, direction_z,
    conversion_depth, fluctuation, cherenkov_fraction,
):
    """Greisen profiles of sub-showers on `_PROFILE_STEPS` depth steps each: depth after the start
    (g/cm²), step length, Cherenkov photons emitted per step, electrons and age per step."""
    n = energy.size
    after_start = np.empty((n, _PROFILE_STEPS))
    photon_yield = np.zeros((n, _PROFILE_STEPS))
    electrons = np.zeros((n, _PROFILE_STEPS))
    age = np.empty((n, _PROFILE_STEPS))
    step = np.empty(n)
    for i in range(n):
        beta0 = np.log(max(energy[i] / CRITICAL_ENERGY, 1.5))
        # follow each sub-shower to well past its maximum (or to the ground)
        length = RADIATION_LENGTH * (2.2 * beta0 + 8.0)
        step[i] = length / _PROFILE_STEPS
        cos_zenith = max(-direction_z[i], 0.05)
        start_depth = vertical_depth_at(layers, start_z[i] + observation_level)
        for k in range(_PROFILE_STEPS):
            since_conversion = length * (k + 0.5) / _PROFILE_STEPS
            after_start[i, k] = conversion_depth[i] + since_conversion
            # t in radiation lengths after conversion, +1 for the first radiated X0
            t = since_conversion / RADIATION_LENGTH + 1.0
            s = 3 * t / (t + 2 * beta0)
            age[i, k] = s
            depth = start_depth + after_start[i, k] * cos_zenith
            if depth >= ground_depth:
                continue
            electrons[i, k] = 0.31 / np.sqrt(beta0) * np.exp(t * (1 - 1.5 * np.log(s))) * fluctuation[i]
            height = height_at(layers, depth)
            index = refractive_index_at(layers, index_per_density, height)
            threshold_mev = 1e3 * cherenkov_threshold_of(index, ELECTRON_MASS)
            above_threshold = _bilinear(cherenkov_fraction, min(max(s, 0.2), 2.0), np.log10(threshold_mev))
            metres_per_depth = 0.01 / density_at(layers, height)
            photon_yield[i, k] = (
                electrons[i, k]
                * min(max(above_threshold, 0.0), 1.0)
                * cherenkov_yield_per_metre(1 - 1 / index**2)
                * metres_per_depth
                * step[i]
            )
    return after_start, step, photon_yield, electrons, age


@njit(cache=True)
def _sample_bunches(
    layers, index_per_density, observation_level, ground_depth, angular_scale, angular_age_power,
    lateral_scale, energy_quantiles, counts, photon_yield, after_start, step, age,
    start_position, start_direction, start_energy, start_time, first, second,
    u_step, u_depth, u_energy, spread_factor, exponential, azimuth,
):
    """Emission bunches, ``counts[i]`` of sub-shower ``i``, from its photon yield per step: position
    (lateral offset included), angular spread, height and time. The random numbers (one each per
    bunch: uniform, the angular spread in units of θ0, exponential) come from the caller."""
    n_bunches = u_step.size
    position = np.empty((n_bunches, 3))
    spread = np.empty(n_bunches)
    height = np.empty(n_bunches)
    time = np.empty(n_bunches)
    cumulative = np.empty(_PROFILE_STEPS)
    b = 0
    for i in range(counts.size):
        if counts[i] == 0:
            continue
        total = 0.0
        for k in range(_PROFILE_STEPS):
            total += photon_yield[i, k]
            cumulative[k] = total
        for _ in range(counts[i]):
            k = min(np.searchsorted(cumulative, u_step[b] * total), _PROFILE_STEPS - 1)
            depth_after_start = after_start[i, k] + (u_depth[b] - 0.5) * step[i]
            path, _ = _path_length(
                layers, observation_level, ground_depth, start_position[i, 2], start_direction[i, 2],
                depth_after_start,
            )
            bunch_height = start_position[i, 2] + start_direction[i, 2] * path + observation_level
            # energy of the emitting electron: spectrum ~E^-(1+s) above the Cherenkov threshold,
            # weighted by the Frank-Tamm yield (1 - (E_th/E)²), from the tabulated inverse
            # distribution function
            threshold = cherenkov_threshold_of(
                refractive_index_at(layers, index_per_density, bunch_height), ELECTRON_MASS
            )
            log_u = max(np.log(1.0 - u_energy[b]), _LOG_U_MIN)
            s = min(max(age[i, k], 0.4), 2.0)
            energy = min(threshold * np.exp(-_bilinear(energy_quantiles, s, log_u)), start_energy[i])
            # multiple scattering spreads electrons of energy E about the sub-shower axis on the
            # angular scale θ0 = 0.83 (E/MeV)^-0.67 rad (Hillas 1982), as a mixture of 2-D Gaussians
            # (see `ShowerModel`): each bunch gets one width
            theta0 = (angular_scale * 0.83 * (1e3 * energy) ** -0.67
                      * min(max(age[i, k], 0.3), 2.0) ** angular_age_power)
            spread[b] = min(max(theta0 * spread_factor[b], MINIMUM_SPREAD), 0.5)
            # lateral displacement from multiple scattering ~ Molière radius (9.6 g/cm² over the
            # density) × E_s / E
            moliere_radius = 9.6 / density_at(layers, bunch_height) / 100.0
            lateral = exponential[b] * lateral_scale * moliere_radius * min(0.0212 / energy, 1.0)
            cos_azimuth, sin_azimuth = np.cos(azimuth[b]), np.sin(azimuth[b])
            for d in range(3):
                position[b, d] = (
                    start_position[i, d]
                    + start_direction[i, d] * path
                    + (cos_azimuth * first[i, d] + sin_azimuth * second[i, d]) * lateral
                )
            height[b] = position[b, 2] + observation_level
            time[b] = start_time[i] + path / SPEED_OF_LIGHT
            b += 1
    return position, spread, height, time



@njit(cache=True)
def _profile_maximum(start_depth, after_start, electrons, max_depth, bin_width=5.0):
    """Centre of the 5 g/cm² slant-depth bin holding most electrons of all sub-showers (NaN if
    there are none); sub-shower i is at slant depth start_depth[i] + after_start[i]."""
    histogram = np.zeros(int(max_depth // bin_width))
    for i in range(after_start.shape[0]):
        for k in range(after_start.shape[1]):
            b = int((start_depth[i] + after_start[i, k]) // bin_width)
            if 0 <= b < histogram.size:
                histogram[b] += electrons[i, k]
    if histogram.size == 0 or histogram.max() <= 0:
        return np.nan
    return (np.argmax(histogram) + 0.5) * bin_width


@dataclass
class EmissionBunches:
    """Weighted Cherenkov emission points of electromagnetic (sub-)showers."""

    position: np.ndarray  # (n, 3) m
    axis: np.ndarray  # (n, 3) propagation direction of the sub-shower
    angular_spread: np.ndarray  # (n,) rad, spread of emitting electrons about the axis
    height: np.ndarray  # (n,) m a.s.l.
    photons: np.ndarray  # (n,) Cherenkov photons (300-600 nm) emitted
    time: np.ndarray  # (n,) ns


@dataclass
class Muons:
    """Muons from charged-pion decays, emitting from their decay point on."""

    position: np.ndarray  # (n, 3) m
    direction: np.ndarray  # (n, 3)
    energy: np.ndarray  # (n,) GeV
    time: np.ndarray  # (n,) ns


@dataclass
class _Particles:
    """Starting points of sub-showers or hadrons (internal)."""

    position: np.ndarray
    direction: np.ndarray
    energy: np.ndarray
    time: np.ndarray

    def select(self, mask):
        return _Particles(self.position[mask], self.direction[mask], self.energy[mask], self.time[mask])

    @staticmethod
    def concatenate(parts):
        return _Particles(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("position", "direction", "energy", "time")


class ShowerModel:
    """Builds the emission bunches and muons of one shower.

    The shower options have no defaults here: `ShowerSimulator`'s traits hold them (its help
    texts and configuration; the CORSIKA comparison's `shower_model_for` reads them there).

    Parameters
    ----------
    atmosphere : Atmosphere
    observation_level : float
        height of the ground (GroundFrame z = 0) above sea level, m
    bunches_per_tev : float
        number of emission bunches per TeV of primary energy (between ``min_bunches`` and
        ``max_bunches``); all bunches of a shower carry the same number of photons
    lateral_scale, angular_scale : float
        scale factors of the lateral spread (in Molière radii) and angular spread of the
        Cherenkov-emitting electrons
    angular_age_power : float
        θ0 is multiplied by the sub-shower's age s (clipped to 0.3-2) to this power: 0 leaves it
        as Hillas gives it, positive values give narrower angles early in the shower and wider
        ones late (calibrated on CORSIKA with the other electron settings, docs: simulation)
    angular_spread_dof : int
        the electrons' angular distribution about the axis is a mixture of 2-D Gaussians of widths
        θ0 × the RMS of this many standard normals (variances ~ χ²/dof, mean θ0²): 1 gives
        dN/dθ ∝ exp(-θ/θ0) (Hillas 1982), whose density per solid angle diverges along the axis;
        more give less light along the axis and a shorter tail at the same mean θ²
    bunch_spread_fraction : float
        part of the emitting electrons' angular spread that each bunch spreads its light over
        (in quadrature); the rest is a direction drawn per bunch, so that a telescope sees the
        light of a finite number of electron track segments: 1 gives every bunch the whole
        distribution (smooth images), smaller values images that fluctuate from shower to shower
    """

    def __init__(
        self,
        atmosphere,
        observation_level,
        *,
        bunches_per_tev,
        min_bunches,
        max_bunches,
        lateral_scale,
        angular_scale,
        angular_age_power,
        angular_spread_dof,
        bunch_spread_fraction,
        profile_fluctuation=0.1,
    ):
        self.atmosphere = atmosphere
        self.observation_level = observation_level
        self.ground_depth = float(atmosphere.vertical_depth(observation_level))
        self.bunches_per_tev = bunches_per_tev
        self.min_bunches = min_bunches
        self.max_bunches = max_bunches
        self.lateral_scale = lateral_scale
        self.angular_scale = angular_scale
        self.angular_age_power = angular_age_power
        self.angular_spread_dof = angular_spread_dof
        self.bunch_spread_fraction = bunch_spread_fraction
        self.profile_fluctuation = profile_fluctuation

    # --- geometry along straight paths -------------------------------------------------------
    def _advance(self, position, direction, slant_depth):
        """Move along ``direction`` through ``slant_depth`` g/cm²; returns (new position, path
        length in m, reached_ground)."""
        length, reached_ground = _path_lengths(
            self.atmosphere.layers, self.observation_level, self.ground_depth,
            np.ascontiguousarray(position[:, 2]), np.ascontiguousarray(direction[:, 2]),
            np.asarray(slant_depth, dtype=float),
        )
        return position + direction * length[:, None], length, reached_ground

    def axis_point(self, core, direction_to_sky, slant_depth):
        """Point on the shower axis at a slant depth (planar atmosphere), and its time (ns)."""
        cos_zenith = direction_to_sky[2]
        height = self.atmosphere.height(slant_depth * cos_zenith)
        length = (height - self.observation_level) / cos_zenith
        return np.asarray(core) + direction_to_sky * length, -length / SPEED_OF_LIGHT

    # --- electromagnetic sub-showers ----------------------------------------------------------
    def em_bunches(self, starts, conversion_depth, n_bunches, rng):
        """Sample equal-weight emission bunches from the sub-showers' photon yield.

        Returns the bunches (None without light) and, for X_max, the sub-showers' depth steps after
        their start (g/cm²) and electron numbers per step."""
        atmosphere = self.atmosphere
        fluctuation = rng.lognormal(0.0, self.profile_fluctuation, size=len(starts.energy))
        after_start, step, photon_yield, electrons, age = _greisen_profiles(
            atmosphere.layers, atmosphere.index_per_density, self.observation_level, self.ground_depth,
            starts.energy, np.ascontiguousarray(starts.position[:, 2]),
            np.ascontiguousarray(starts.direction[:, 2]), conversion_depth, fluctuation,
            _CHERENKOV_FRACTION,
        )
        per_shower = photon_yield.sum(axis=1)
        total = per_shower.sum()
        if total <= 0:
            return None, (after_start, electrons)
        weight = total / n_bunches
        # equal weights everywhere; sub-showers worth less than one bunch get one by chance
        counts = np.floor(per_shower / weight + rng.uniform(size=len(per_shower))).astype(np.int64)
        n = int(counts.sum())
        if n == 0:
            return None, (after_start, electrons)
        # per bunch: depth step, position in the step, electron energy, angular spread, lateral
        # offset and its azimuth
        u_step, u_depth, u_energy = rng.uniform(size=(3, n))
        # the Gaussians' widths in units of θ0: the RMS of `angular_spread_dof` standard normals
        spread_factor = np.sqrt(np.mean(rng.standard_normal((self.angular_spread_dof, n)) ** 2, axis=0))
        exponential = rng.standard_exponential(n)
        azimuth = rng.uniform(0, 2 * np.pi, size=n)
        # perpendicular bases once per sub-shower, not per bunch
        first, second = perpendicular_basis(starts.direction)
        position, spread, height, time = _sample_bunches(
            atmosphere.layers, atmosphere.index_per_density, self.observation_level, self.ground_depth,
            self.angular_scale, self.angular_age_power, self.lateral_scale, _EMITTING_ENERGY_QUANTILES,
            counts, photon_yield, after_start, step, age, starts.position, starts.direction, starts.energy, starts.time,
            first, second, u_step, u_depth, u_energy, spread_factor, exponential, azimuth,
        )
        axis, spread = self._bunch_directions(np.repeat(starts.direction, counts, axis=0), spread, rng)
        bunches = EmissionBunches(
            position=position,
            axis=axis,
            angular_spread=spread,
            height=height,
            photons=np.full(n, weight),
            time=time,
        )
        return bunches, (after_start, electrons)

    def _bunch_directions(self, axis, spread, rng):
        """Each bunch's electron direction, drawn about its sub-shower ``axis`` with the part of
        the angular ``spread`` the bunch does not keep, and the spread it keeps: in quadrature they
        add up to ``spread``, so the mean light is unchanged. The drawn part is a 2-D Gaussian
        offset in the plane tangent to the axis, i.e. a turn by the arctangent of its length."""
        fraction = self.bunch_spread_fraction
        if fraction >= 1.0:
            return axis, spread
        drawn = spread * np.sqrt(1.0 - fraction**2)
        offset = rng.standard_normal((2, len(spread))) * drawn
        direction = rotate_away(axis, np.arctan(np.hypot(*offset)), np.arctan2(offset[1], offset[0]))
        return direction, np.maximum(spread * fraction, MINIMUM_SPREAD)

    @staticmethod
    def depth_of_maximum(energy):
        """Slant depth (g/cm²) from conversion to the maximum of a photon shower of ``energy`` GeV."""
        beta0 = np.log(max(energy / CRITICAL_ENERGY, 1.5))
        t = np.arange(1.0, 4 * beta0 + 10.0, 0.01)
        age = 3 * t / (t + 2 * beta0)
        return (t[np.argmax(t * (1 - 1.5 * np.log(age)))] - 1.0) * RADIATION_LENGTH

    # --- hadronic cascade -------------------------------------------------------------------
    def hadronic_cascade(self, start, direction, energy, time, rng):
        """Follow nucleons and charged pions generation by generation.

        Each interaction gives a leading particle keeping 1-K of the energy (inelasticity K
        uniform in 0.3-0.7 for nucleons, 0.5-0.9 for pions) and 2 + Poisson(3 (K E / GeV)^0.3)
        secondaries sharing K E unevenly (`SHARE_SHAPE`), a fraction `NEUTRAL_FRACTION` decaying into photons
        (→ electromagnetic sub-showers) and the rest charged pions, with transverse momenta of
        ~0.4 GeV/c. Charged pions interact again (λ = 120 g/cm²) or decay into muons.
        """
        hadrons = _Particles(start[None, :], direction[None, :], np.array([energy]), np.array([time]))
        kind = np.array([NUCLEON])
        em, muons = [], []
        while len(hadrons.energy):
            n = len(hadrons.energy)
            # pions lose more of their energy per collision than nucleons
            inelasticity = np.where(kind == NUCLEON, rng.uniform(0.3, 0.7, size=n), rng.uniform(0.5, 0.9, size=n))
            available = inelasticity * hadrons.energy
            multiplicity = 2 + rng.poisson(3.0 * available**0.3)
            parent = np.repeat(np.arange(n), multiplicity)
            # Dirichlet sharing of the energy between the secondaries (see SHARE_SHAPE)
            share = rng.gamma(SHARE_SHAPE, size=len(parent))
            share /= np.bincount(parent, weights=share, minlength=n)[parent]
            sec_energy = available[parent] * share
            transverse = rng.gamma(2.0, 0.2, size=len(parent))
            angle = np.minimum(transverse / sec_energy, 0.6)
            sec_direction = rotate_away(
                hadrons.direction[parent], angle, rng.uniform(0, 2 * np.pi, size=len(parent))
            )
            secondaries = _Particles(
                hadrons.position[parent], sec_direction, sec_energy, hadrons.time[parent]
            )
            neutral = rng.uniform(size=len(parent)) < NEUTRAL_FRACTION
            em.append(secondaries.select(neutral & (sec_energy > MINIMUM_EM_ENERGY)))

            leading = _Particles(
                hadrons.position, hadrons.direction, (1 - inelasticity) * hadrons.energy, hadrons.time
            )
            hadrons = _Particles.concatenate([leading, secondaries.select(~neutral)])
            kind = np.concatenate([kind, np.full(np.count_nonzero(~neutral), CHARGED_PION)])
            alive = hadrons.energy > MINIMUM_HADRON_ENERGY
            hadrons, kind = hadrons.select(alive), kind[alive]

            hadrons, kind, decayed = self._propagate_hadrons(hadrons, kind, rng)
            muons.append(decayed)
        return _Particles.concatenate(em), _Particles.concatenate(muons)

    def _propagate_hadrons(self, hadrons, kind, rng):
        """Move hadrons to their next interaction; charged pions may decay first."""
        mean_free_path = np.where(kind == NUCLEON, 80.0, PION_INTERACTION_LENGTH)
        position, length, reached_ground = self._advance(
            hadrons.position, hadrons.direction, rng.exponential(mean_free_path)
        )
        decay_length = rng.exponential(hadrons.energy / PION_MASS * PION_DECAY_LENGTH)
        decays = (kind == CHARGED_PION) & (decay_length < length)
        # two-body decay: the muon keeps 57-100 % of the pion energy
        muon_energy = hadrons.energy * rng.uniform(0.57, 1.0, size=len(kind))
        decayed = _Particles(
            hadrons.position + hadrons.direction * decay_length[:, None],
            hadrons.direction,
            muon_energy,
            hadrons.time + decay_length / SPEED_OF_LIGHT,
        ).select(decays & (decay_length * -hadrons.direction[:, 2] < hadrons.position[:, 2]))
        moved = _Particles(position, hadrons.direction, hadrons.energy, hadrons.time + length / SPEED_OF_LIGHT)
        interacts = ~decays & ~reached_ground
        return moved.select(interacts), kind[interacts], decayed

    # --- whole showers ----------------------------------------------------------------------
    def simulate(self, primary, core, rng):
        """Emission bunches, muons and X_max of one primary.

        ``core`` is the (x, y, 0) GroundFrame position where the axis meets the ground.
        Returns (bunches or None, muons, x_max in g/cm², first-interaction height in m a.s.l.).
        """
        to_sky = primary.direction
        axis = -to_sky
        energy = primary.energy * 1e3
        first, first_time = self.axis_point(core, to_sky, primary.first_interaction_depth)
        n_bunches = int(np.clip(self.bunches_per_tev * primary.energy, self.min_bunches, self.max_bunches))

        if primary.particle == "proton":
            em, muon_particles = self.hadronic_cascade(first, axis, energy, first_time, rng)
            # neutral pions decay at once; their photons convert after 9/7 X0 on average
            conversion = rng.exponential(9.0 / 7.0 * RADIATION_LENGTH, size=len(em.energy))
        else:
            em = _Particles(first[None, :], axis[None, :], np.array([energy]), np.array([first_time]))
            conversion = np.zeros(1)
            muon_particles = _Particles(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0))

        bunches, (after_start, electrons) = self.em_bunches(em, conversion, n_bunches, rng)
        x_max = self._x_max(em, after_start, electrons, to_sky)
        muons = Muons(
            position=muon_particles.position,
            direction=muon_particles.direction,
            energy=muon_particles.energy,
            time=muon_particles.time,
        )
        first_height = first[2] + self.observation_level
        return bunches, muons, x_max, first_height

    def _x_max(self, em, after_start, electrons, to_sky):
        """Slant depth of the maximum of the summed electron profile along the primary axis."""
        cos_zenith = to_sky[2]
        start_depth = self.atmosphere.vertical_depth(em.position[:, 2] + self.observation_level) / cos_zenith
        return _profile_maximum(start_depth, after_start, electrons, self.ground_depth / cos_zenith + 10.0)
