"""Real CORSIKA IACT output as the reference for the shower model, photon field by photon field.

Reading CORSIKA is an input adaptor: `read_corsika` turns each (re-used) shower of an IACT file
into a `CorsikaShower` (primary, first interaction, X_max, atmosphere, observation level, the
telescope spheres relative to the core and their photon bunches). `corsika_light` gives the
bunches of one sphere as light on a mirror (directions in the `TelescopeFrame`, times on the plane
through the sphere centre perpendicular to the pointing, emission heights), and `matched_model_light`
the light of a shower of the built-in model with the same primary, energy, direction,
first-interaction height, atmosphere, telescope positions, sphere radii and cores, expressed in
CORSIKA's photon definition. `photon_field_summary` reduces either to the same numbers (photons,
centroid offset from the source, width and length of the ideal image, arrival-time spread, emission
heights), `compare_photon_fields` tabulates both side by side and `summarise_photon_fields` /
`scatter_between_showers` reduce the table. `compare_detector_images` isolates the detector part:
CORSIKA's photons of the showers of a sim_telarray file go through the project's camera model and
are compared with the sim_telarray images pixel by pixel.

sim_telarray files carry CORSIKA's photon count at every telescope sphere (``MCPhotoelectronSum``:
the bunch sizes summed over the sphere, before any extinction) and the CORSIKA input card with the
spheres' radii. `read_simtel_light_pool` turns them into `CorsikaShower` objects without bunches
(``sphere_photons`` instead), for which `compare_photon_fields` compares the photon counts alone:
the light pool at energies and for primaries of which no CORSIKA IACT file is at hand.
`corsika_spheres` gives the spheres of such a file, which need not cover the whole dish.

Like for like: CORSIKA counts every photon of its wavelength band (``CWAVLG``, 240-1000 nm in the
CTA files) crossing the sphere, with no atmospheric extinction (unless compiled with ``CEFFIC``,
then the bunches are already weighted by extinction, mirror and quantum efficiency and their counts
are not comparable: `CorsikaShower.efficiency_applied`). The model's "photons on the mirror" are
300-600 nm Frank-Tamm photons collected by the mirror area and reduced by the atmospheric
transmission, so for the comparison the model mirror is the sphere's cross-section π r², the
transmission is divided out, and the count is scaled to CORSIKA's band with the λ⁻² Frank-Tamm
spectrum.
"""
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from numba import njit
from scipy.optimize import brentq

from ..constants import GAMMA_ID, PROTON_ID
from .atmosphere import Atmosphere, transmission_at
from .cherenkov import LightOnMirror, TelescopeView, bunch_light
from .primaries import Primary, alt_az_from_direction
from .showers import SPEED_OF_LIGHT, ShowerModel
from .simulator import ShowerSimulator

__all__ = [
    "CorsikaShower",
    "read_corsika",
    "corsika_atmosphere",
    "corsika_light",
    "corsika_spheres",
    "read_simtel_light_pool",
    "matched_model_light",
    "photon_field_summary",
    "compare_photon_fields",
    "scatter_between_showers",
    "summarise_photon_fields",
    "telescope_view",
    "model_photons_on_mirror",
    "compare_detector_images",
    "summarise_detector_comparison",
    "MODEL_BAND",
    "SHOWER_MODEL_TRAITS",
]

# wavelength band (nm) of the model's Cherenkov photons (atmosphere.cherenkov_yield_per_metre)
MODEL_BAND = (300.0, 600.0)
_CORSIKA_PARTICLES = {1: "gamma", 14: "proton"}
_SIMTEL_PARTICLES = {GAMMA_ID: "gamma", PROTON_ID: "proton"}
# sim_telarray's id of the Cherenkov-photon profile (photons per depth step, CORSIKA's band)
_PROFILE_CHERENKOV = 1010
# CORSIKA's default layer boundaries (m); fitted atmospheres get theirs from continuity
_DEFAULT_BOUNDS = (0.0, 4e3, 1e4, 4e4, 1e5)
# CEFFIC bit of the event header's Cherenkov flag (CORSIKA user guide, event header word 76)
_CEFFIC_BIT = 1 << 2
_CM = 0.01


def frank_tamm_band_factor(band, reference=MODEL_BAND):
    """Photons in ``band`` per photon in ``reference`` (nm) for a λ⁻² Cherenkov spectrum."""
    (lo, hi), (ref_lo, ref_hi) = band, reference
    return (1 / lo - 1 / hi) / (1 / ref_lo - 1 / ref_hi)


def corsika_atmosphere(run_header):
    """The five-layer atmosphere CORSIKA used (AATM, BATM, CATM of the run header), as the
    model's `Atmosphere`. The boundaries of fitted (``ATMEXT``) atmospheres are not in the header;
    neighbouring layers' overburdens meet there: of their crossings above the previous boundary,
    the one nearest to CORSIKA's default boundary is taken (two fitted layers cross twice, close
    together, and differ little in between)."""
    a = np.asarray(run_header["aatm"], dtype=float)
    b = np.asarray(run_header["batm"], dtype=float)
    c = np.asarray(run_header["catm"], dtype=float) * _CM

    def depth(i, h):
        return a[i] + b[i] * np.exp(-h / c[i]) if i < 4 else a[i] - b[i] * h / c[i]

    grid = np.linspace(0.0, 1.3e5, 13001)
    bounds = [0.0]
    for i in range(4):
        difference = depth(i, grid) - depth(i + 1, grid)
        brackets = np.flatnonzero(np.sign(difference[:-1]) != np.sign(difference[1:]))
        crossings = [
            brentq(lambda h: depth(i, h) - depth(i + 1, h), grid[k], grid[k + 1]) for k in brackets
        ]
        crossings = [h for h in crossings if h > bounds[-1]]
        default = _DEFAULT_BOUNDS[i + 1]
        bounds.append(min(crossings, key=lambda h: abs(h - default)) if crossings else default)
    return Atmosphere(np.column_stack([bounds, a, b, c]))


@dataclass
class CorsikaShower:
    """One (re-used) CORSIKA shower with the photon bunches at its telescope spheres.

    Lengths in m (GroundFrame-like CORSIKA frame: x magnetic north, y west, z up), energies TeV,
    angles rad, depths g/cm².
    """

    name: str
    event_number: int
    reuse: int
    particle: str
    energy: float
    zenith: float
    azimuth: float  # azimuth of the momentum in the array frame (CORSIKA's, less ARRANG)
    first_interaction_height: float  # m a.s.l.
    x_max: float  # slant depth of the charged-particle maximum (nan without a profile)
    emitted_photons: float  # Cherenkov photons of the longitudinal table, CORSIKA's band (or nan)
    observation_level: float
    band: tuple
    efficiency_applied: bool
    atmosphere: Atmosphere = field(repr=False)
    telescope_offsets: np.ndarray = field(repr=False)  # (n, 3) sphere centres relative to the core
    radii: np.ndarray = field(repr=False)
    bunches: dict = field(repr=False)  # telescope index -> structured array (CORSIKA units)
    #: photons per sphere where the bunches are not at hand (sim_telarray's record of them)
    sphere_photons: np.ndarray = field(default=None, repr=False)

    @property
    def to_sky(self):
        """Unit vector to where the primary comes from."""
        sin_z = np.sin(self.zenith)
        return np.array(
            [-sin_z * np.cos(self.azimuth), -sin_z * np.sin(self.azimuth), np.cos(self.zenith)]
        )

    @property
    def source_alt_az(self):
        alt, az = alt_az_from_direction(self.to_sky)
        return float(alt), float(az)

    def impact_distance(self, index):
        """Distance (m) of the sphere centre from the shower axis (as sim_telarray gives it)."""
        offset = self.telescope_offsets[index]
        along = offset @ self.to_sky
        return float(np.sqrt(max(offset @ offset - along**2, 0.0)))

    def first_interaction_depth(self):
        """Slant depth of the first interaction in the shower's own atmosphere (planar)."""
        height = self.first_interaction_height
        return float(self.atmosphere.vertical_depth(height)) / np.cos(self.zenith)


def _x_max(longitudinal, zenith):
    """Slant depth of the maximum of CORSIKA's charged-particle profile, from a parabola through
    the largest entry and its neighbours. The entries are at vertical depths k × step (the first
    non-zero one is always the first level below the first interaction's vertical depth); the
    vertical value is the ``x_max`` sim_telarray writes for the same showers."""
    if longitudinal is None:
        return np.nan
    charged = np.asarray(longitudinal["data"][6], dtype=float)
    step = float(longitudinal["thickstep"])
    k = int(np.argmax(charged))
    depth = k * step
    if 0 < k < len(charged) - 1:
        left, centre, right = charged[k - 1 : k + 2]
        curvature = left - 2 * centre + right
        if curvature < 0:
            depth += 0.5 * step * (left - right) / curvature
    return depth / np.cos(zenith)


def read_corsika(path):
    """Every (re-used) shower of a CORSIKA IACT file as `CorsikaShower`, in file order."""
    import eventio

    showers = []
    with eventio.IACTFile(str(path)) as f:
        run_header = f.header
        atmosphere = corsika_atmosphere(run_header)
        positions = np.array([[t["x"], t["y"], t["z"]] for t in f.telescope_positions]) * _CM
        radii = np.array([t["r"] for t in f.telescope_positions]) * _CM
        for event in f:
            header = event.header
            particle_id = int(header["particle_id"])
            if particle_id not in _CORSIKA_PARTICLES:
                raise ValueError(f"{path}: primary particle id {particle_id} is not supported")
            zenith = float(header["zenith"])
            core = np.array([event.impact_x, event.impact_y, 0.0]) * _CM
            showers.append(
                CorsikaShower(
                    name=str(path),
                    event_number=int(header["event_number"]),
                    reuse=int(event.reuse),
                    particle=_CORSIKA_PARTICLES[particle_id],
                    energy=float(header["total_energy"]) * 1e-3,
                    zenith=zenith,
                    # the IACT output (bunches, spheres, cores) is in the array frame, which
                    # CORSIKA's ARRANG turns by this angle from its magnetic-north x axis
                    azimuth=float(header["azimuth"]) - float(header["angle_array_x_magnetic_north"]),
                    # CORSIKA writes it negative when tracking starts at the top of the atmosphere
                    first_interaction_height=abs(float(header["first_interaction_height"])) * _CM,
                    x_max=_x_max(event.longitudinal, zenith),
                    # the table's photons per depth step (they fall past the maximum: not cumulative)
                    emitted_photons=(
                        np.nan if event.longitudinal is None else float(np.sum(event.longitudinal["data"][8]))
                    ),
                    observation_level=float(header["observation_height"][0]) * _CM,
                    band=(
                        float(header["cherenkov_wavelength_min"]),
                        float(header["cherenkov_wavelength_max"]),
                    ),
                    efficiency_applied=bool(int(header["cerenkov_flag"]) & _CEFFIC_BIT),
                    atmosphere=atmosphere,
                    telescope_offsets=positions - core,
                    radii=radii,
                    bunches={int(k): v for k, v in event.photon_bunches.items()},
                )
            )
    return showers


def corsika_spheres(simtel_path):
    """Centres (m, relative to the array centre, z above the observation level) and radii (m) of the
    CORSIKA telescope spheres behind a sim_telarray file, in telescope order: the ``TELESCOPE``
    lines of the CORSIKA input card the file carries (four lengths in cm; what follows them, a
    ``CM`` or a label, is not read).
    sim_telarray sees only the photons that cross a sphere, so a sphere smaller than the dish
    leaves part of the mirror dark."""
    import eventio

    with eventio.EventIOFile(str(simtel_path)) as f:
        card = next((o.parse() for o in f if isinstance(o, eventio.iact.InputCard)), None)
    if card is None:
        raise ValueError(f"{simtel_path}: no CORSIKA input card in the file")
    spheres = []
    for line in card.decode("ascii", errors="replace").splitlines():
        words = line.split("#")[0].split()
        if not words or words[0].upper() != "TELESCOPE":
            continue
        if len(words) < 5:
            raise ValueError(f"{simtel_path}: cannot read the input-card line {line.strip()!r}")
        spheres.append([float(w) * _CM for w in words[1:5]])
    if not spheres:
        raise ValueError(f"{simtel_path}: the CORSIKA input card has no TELESCOPE line")
    spheres = np.array(spheres)
    return spheres[:, :3], spheres[:, 3]


def read_simtel_light_pool(simtel_path):
    """Every (re-used) shower that a sim_telarray file recorded, as a `CorsikaShower` with the
    photons CORSIKA delivered to each sphere (``sphere_photons``, from ``MCPhotoelectronSum``) and
    no bunches: primary, energy, direction, first interaction, X_max (sim_telarray's vertical
    depth made slant), the photons of the longitudinal profile, the atmosphere (the file's
    five-layer fit), the band and the spheres of the CORSIKA run. Only the array events that
    triggered are in the file, so the count is that of triggered showers."""
    from eventio import SimTelFile

    centres, radii = corsika_spheres(simtel_path)
    showers, atmosphere = [], None
    with SimTelFile(str(simtel_path)) as f:
        for event in f:
            sums, shower = event.get("photoelectron_sums"), event["mc_shower"]
            if sums is None or int(shower["primary_id"]) not in _SIMTEL_PARTICLES:
                continue
            run_header = f.mc_run_headers[-1]  # the headers are read with the first event
            if atmosphere is None:
                layers = f.atmospheric_profiles[0]["five_layer_atmosphere"]  # cm, a, b, c (cm), 1/c
                atmosphere = Atmosphere(np.column_stack(
                    [layers[:, 0] * _CM, layers[:, 1], layers[:, 2], layers[:, 3] * _CM]
                ))
            zenith = np.pi / 2 - float(shower["altitude"])
            core = np.array([event["mc_event"]["xcore"], event["mc_event"]["ycore"], 0.0])
            photons = np.zeros(len(radii))
            n = min(len(radii), len(sums["photons"]))
            photons[:n] = sums["photons"][:n]
            cherenkov = [p["content"] for p in shower["profiles"] if p["id"] == _PROFILE_CHERENKOV]
            showers.append(
                CorsikaShower(
                    name=str(simtel_path),
                    event_number=int(event["event_id"]) // 100,
                    # counted from 1 as CORSIKA does (sim_telarray's event_id = 100 × event + reuse - 1)
                    reuse=int(event["event_id"]) % 100 + 1,
                    particle=_SIMTEL_PARTICLES[int(shower["primary_id"])],
                    energy=float(shower["energy"]),
                    zenith=zenith,
                    # sim_telarray's azimuth is where the shower comes from, north to east; CORSIKA's
                    # that of the momentum, from x (north) to y (west)
                    azimuth=np.pi - float(shower["azimuth"]),
                    first_interaction_height=float(shower["h_first_int"]),
                    x_max=float(shower["xmax"]) / np.cos(zenith),
                    emitted_photons=float(np.sum(cherenkov[0])) if cherenkov else np.nan,
                    observation_level=float(run_header["obsheight"]),
                    band=(float(run_header["corsika_wlen_min"]), float(run_header["corsika_wlen_max"])),
                    efficiency_applied=False,
                    atmosphere=atmosphere,
                    telescope_offsets=centres - core,
                    radii=radii,
                    bunches={},
                    sphere_photons=photons,
                )
            )
    return showers


def telescope_view(shower, index, pointing=None, mirror_area=None):
    """The model's `TelescopeView` of sphere ``index``: mirror area π r² (or ``mirror_area``),
    pointing at the source (or ``pointing`` = (alt, az) in rad, in CORSIKA's frame)."""
    alt, az = shower.source_alt_az if pointing is None else pointing
    area = np.pi * shower.radii[index] ** 2 if mirror_area is None else mirror_area
    return TelescopeView(shower.telescope_offsets[index], alt, az, area, shower.observation_level)


def corsika_light(shower, index, view, to_mirror_centre=False, mirror_radius=None):
    """CORSIKA's photons at sphere ``index`` as `LightOnMirror` (photons as CORSIKA counts them),
    with their emission heights (m a.s.l.) and emission points (m, relative to the sphere centre).

    Directions are the photons' own (a perfect telescope focused at infinity), or with
    ``to_mirror_centre`` those of their emission points seen from the sphere centre (the model's
    definition). Times are moved to the plane through the sphere centre perpendicular to the
    pointing (CORSIKA gives them on the horizontal plane). ``mirror_radius`` keeps only photons
    crossing that plane within this distance of the centre (a mirror dish inside the sphere).
    """
    b = shower.bunches.get(index)
    if b is None or len(b) == 0:
        empty = np.zeros(0)
        return LightOnMirror(empty, empty, empty, empty), empty, np.zeros((0, 3))
    cx, cy = b["cx"].astype(float), b["cy"].astype(float)
    cz = np.sqrt(np.clip(1 - cx**2 - cy**2, 0, 1))
    to_sky = np.column_stack([-cx, -cy, cz])
    position = np.column_stack([b["x"] * _CM, b["y"] * _CM, np.zeros(len(b))])  # from the centre
    emission_height = b["zem"].astype(float) * _CM
    sphere_height = shower.observation_level + shower.telescope_offsets[index, 2]
    emission = position + to_sky * ((emission_height - sphere_height) / cz)[:, None]
    # crossing of the plane perpendicular to the pointing: position + s to_sky with s along the sky
    along = -(position @ view.pointing) / (to_sky @ view.pointing)
    time = b["time"].astype(float) - along / SPEED_OF_LIGHT
    keep = np.ones(len(b), dtype=bool)
    if mirror_radius is not None:
        on_plane = position + along[:, None] * to_sky
        keep = np.linalg.norm(on_plane, axis=1) <= mirror_radius
    if to_mirror_centre:
        to_sky = emission / np.linalg.norm(emission, axis=1)[:, None]
    fov_lon, fov_lat = view.fov_coordinates(to_sky[keep])
    light = LightOnMirror(fov_lon, fov_lat, b["photons"].astype(float)[keep], time[keep])
    return light, emission_height[keep], emission[keep]


@njit(cache=True)
def _transmissions(layers, emission, telescope_position, telescope_height):
    out = np.empty(len(emission))
    for k in range(len(emission)):
        dx = telescope_position[0] - emission[k, 0]
        dy = telescope_position[1] - emission[k, 1]
        dz = telescope_position[2] - emission[k, 2]
        cos_zenith = -dz / np.sqrt(dx * dx + dy * dy + dz * dz)
        height = emission[k, 2] + telescope_height - telescope_position[2]
        out[k] = transmission_at(layers, height, telescope_height, cos_zenith)
    return out


def matched_primary(shower):
    """The model's `Primary` with the CORSIKA shower's particle, energy, direction and
    first-interaction height, its core at the origin."""
    alt, az = shower.source_alt_az
    return Primary(
        particle=shower.particle,
        energy=shower.energy,
        alt=alt,
        az=az,
        core_x=0.0,
        core_y=0.0,
        first_interaction_depth=shower.first_interaction_depth(),
    )


#: the ShowerSimulator traits that set the shower model
SHOWER_MODEL_TRAITS = (
    "bunches_per_tev", "min_bunches", "max_bunches", "lateral_scale", "angular_scale",
    "angular_age_power", "angular_spread_dof", "bunch_spread_fraction",
)


def shower_model_for(shower, **options):
    """The model's `ShowerModel` in the CORSIKA shower's atmosphere and observation level, with the
    simulator's default settings (``options`` override them)."""
    traits = ShowerSimulator.class_traits()
    unknown = set(options) - set(SHOWER_MODEL_TRAITS)
    if unknown:
        raise ValueError(f"not shower-model settings: {sorted(unknown)}; they are {SHOWER_MODEL_TRAITS}")
    settings = {name: traits[name].default_value for name in SHOWER_MODEL_TRAITS}
    settings.update(options)
    return ShowerModel(shower.atmosphere, shower.observation_level, **settings)


def matched_model_light(shower, model, rng, reuses=()):
    """Light of one model shower matched to ``shower`` at each of its spheres, in CORSIKA's photon
    definition (sphere cross-section, no extinction, CORSIKA's band), with emission heights.

    ``reuses`` are further `CorsikaShower` re-uses of the same shower (other cores): the same model
    shower is seen from their spheres too. Returns {(reuse, index): (LightOnMirror, heights)}, the
    model's X_max (slant g/cm²) and the photons its shower emits, in CORSIKA's band.
    """
    # muon light (protons) has no emission points to divide the transmission out: protons are
    # compared on their electromagnetic light
    bunches, _, x_max, _ = model.simulate(matched_primary(shower), np.zeros(3), rng)
    band_factor = frank_tamm_band_factor(shower.band)
    result = {}
    for reused in (shower, *reuses):
        for index in range(len(reused.radii)):
            view = telescope_view(reused, index)
            if bunches is None:
                empty = np.zeros(0)
                result[reused.reuse, index] = (LightOnMirror(empty, empty, empty, empty), empty)
                continue
            light = bunch_light(bunches, view, shower.atmosphere)
            transmission = _transmissions(
                shower.atmosphere.layers, bunches.position, view.position, view.height
            )
            photons = light.photons / np.maximum(transmission, 1e-12) * band_factor
            result[reused.reuse, index] = (
                LightOnMirror(light.fov_lon, light.fov_lat, photons, light.time),
                bunches.height,
            )
    emitted = 0.0 if bunches is None else float(bunches.photons.sum()) * band_factor
    return result, x_max, emitted


def _weighted_quantiles(values, weights, quantiles):
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    return np.interp(quantiles, cumulative, values[order])


def photon_field_summary(light, heights, min_photons=1.0):
    """Photons, ideal-image moments (deg: centroid offset from the source at (0, 0); width and
    length from the photon-weighted covariance of the directions, as Hillas parameters are defined,
    and the tail-insensitive ``core_width``/``core_length``, half the 16-84 % interquantile widths
    along the same axes), arrival-time spread (ns, half the 16-84 % interquantile width) and
    emission heights (km a.s.l.: median and half the 16-84 % width) of the light at one telescope;
    NaN for moments of fields under ``min_photons``."""
    weight = np.asarray(light.photons, dtype=float)
    total = float(weight.sum())
    summary = dict(photons=total)
    if total < min_photons or np.count_nonzero(weight > 0) < 3:
        return {**summary, **{name: np.nan for name in QUANTITIES[1:]}}
    lon, lat = light.fov_lon, light.fov_lat
    mean_lon, mean_lat = np.average(lon, weights=weight), np.average(lat, weights=weight)
    covariance = np.cov(np.vstack([lon, lat]), aweights=weight, bias=True)
    variances, axes = np.linalg.eigh(covariance)
    minor, major = np.sqrt(np.clip(variances, 0, None))
    along_minor, along_major = axes.T @ np.vstack([lon - mean_lon, lat - mean_lat])
    core_width, core_length = (
        0.5 * np.diff(_weighted_quantiles(values, weight, [0.16, 0.84]))[0]
        for values in (along_minor, along_major)
    )
    t16, t84 = _weighted_quantiles(light.time, weight, [0.16, 0.84])
    h16, h50, h84 = _weighted_quantiles(np.asarray(heights, dtype=float), weight, [0.16, 0.5, 0.84]) / 1e3
    return {
        **summary,
        "centroid_offset": float(np.hypot(mean_lon, mean_lat)),
        "width": float(minor),
        "length": float(major),
        "core_width": float(core_width),
        "core_length": float(core_length),
        "time_spread": float(0.5 * (t84 - t16)),
        "height_median": float(h50),
        "height_spread": float(0.5 * (h84 - h16)),
    }


QUANTITIES = (
    "photons", "centroid_offset", "width", "length", "core_width", "core_length", "time_spread",
    "height_median", "height_spread",
)


def _group_reuses(showers):
    """Showers grouped by (file, event number): the re-uses of one CORSIKA shower."""
    groups = {}
    for shower in showers:
        groups.setdefault((shower.name, shower.event_number), []).append(shower)
    return list(groups.values())


def _reference_summaries(shower, index):
    """CORSIKA's summary of sphere ``index`` with the photon directions to the sphere centre and
    with the photons' own; only the photon count for a shower without bunches."""
    if shower.sphere_photons is not None:
        count = {"photons": float(shower.sphere_photons[index]), **{q: np.nan for q in QUANTITIES[1:]}}
        return count, count
    view = telescope_view(shower, index)
    light, heights, _ = corsika_light(shower, index, view, to_mirror_centre=True)
    return (photon_field_summary(light, heights),
            photon_field_summary(*corsika_light(shower, index, view)[:2]))


def compare_photon_fields(showers, n_matched=10, seed=0, min_photons=50.0, **model_options):
    """Per CORSIKA shower and sphere: the CORSIKA summary (``corsika_*``, photon directions to the
    sphere centre; ``corsika_raw_*`` the photons' own directions) and the median of ``n_matched``
    matched model showers (``model_*``; also ``model_p16_photons``/``model_p84_photons`` and the
    per-replica values ``model_all_*`` for the scatter between showers). Spheres where CORSIKA has
    fewer than ``min_photons`` photons are left out. Showers without bunches
    (`read_simtel_light_pool`) have their photon counts compared, their other quantities NaN."""
    rows = []
    for group in _group_reuses(showers):
        first = group[0]
        model = shower_model_for(first, **model_options)
        rng = np.random.default_rng([seed, first.event_number, len(rows)])
        replicas, x_max_model, emitted_model = [], [], []
        for _ in range(n_matched):
            light, x_max, emitted = matched_model_light(first, model, rng, reuses=group[1:])
            emitted_model.append(emitted)
            replicas.append(light)
            x_max_model.append(x_max)
        for shower in group:
            for index in range(len(shower.radii)):
                reference, raw = _reference_summaries(shower, index)
                if reference["photons"] < min_photons:
                    continue
                model_values = [photon_field_summary(*r[shower.reuse, index]) for r in replicas]
                row = {
                    "file": shower.name.rsplit("/", 1)[-1],
                    "event": shower.event_number,
                    "reuse": shower.reuse,
                    "telescope": index + 1,
                    "particle": shower.particle,
                    "energy": shower.energy,
                    "zenith": np.degrees(shower.zenith),
                    "observation_level": shower.observation_level / 1e3,
                    "first_interaction_height": shower.first_interaction_height / 1e3,
                    "impact_distance": shower.impact_distance(index),
                    "sphere_radius": float(shower.radii[index]),
                    "efficiency_applied": shower.efficiency_applied,
                    "corsika_x_max": shower.x_max,
                    "model_x_max": float(np.nanmedian(x_max_model)),
                    "corsika_emitted_photons": shower.emitted_photons,
                    "model_emitted_photons": float(np.median(emitted_model)),
                }
                for name in QUANTITIES:
                    values = np.array([m[name] for m in model_values], dtype=float)
                    row[f"corsika_{name}"] = reference[name]
                    row[f"corsika_raw_{name}"] = raw[name]
                    row[f"model_{name}"] = _nanmedian(values)
                    row[f"model_all_{name}"] = values
                photons = row["model_all_photons"]
                row["model_p16_photons"], row["model_p84_photons"] = np.percentile(photons, [16, 84])
                rows.append(row)
    return Table(rows=rows)


def _log(values):
    """ln of positive values, NaN elsewhere."""
    values = np.asarray(values, dtype=float)
    return np.log(np.where(values > 0, values, np.nan))


def scatter_between_showers(
    table, quantity="photons", distance_bins=(0, 80, 140, 200, 300, 2000), min_showers=3
):
    """Shower-to-shower scatter of ln(quantity) at similar core distance: per file, spheres are put
    in ``distance_bins`` (m); the scatter is the RMS of ln(value) about its bin mean, pooled over
    bins with at least three spheres. The model's is that of each replica ensemble (one matched
    shower per CORSIKA shower, same cores), the median over replicas. Returns a table per file with
    at least ``min_showers`` showers."""
    rows = []
    for name in np.unique(table["file"]):
        part = table[table["file"] == name]
        if len(np.unique(part["event"])) < min_showers:
            continue
        distance_bin = np.digitize(part["impact_distance"], distance_bins)
        corsika = _log(part[f"corsika_{quantity}"])
        model = _log(np.stack(part[f"model_all_{quantity}"]))  # (spheres, replicas)
        corsika_residuals, model_residuals, n_used = [], [], 0
        for b in np.unique(distance_bin):
            members = distance_bin == b
            if members.sum() < 3:
                continue
            n_used += int(members.sum())
            corsika_residuals.append(corsika[members] - np.nanmean(corsika[members]))
            model_residuals.append(model[members] - np.nanmean(model[members], axis=0))
        if not corsika_residuals:
            continue
        corsika_rms = float(np.sqrt(np.nanmean(np.concatenate(corsika_residuals) ** 2)))
        model_rms = np.sqrt(np.nanmean(np.concatenate(model_residuals) ** 2, axis=0))
        rows.append(
            {
                "file": name,
                "quantity": quantity,
                "spheres": n_used,
                "showers": len(np.unique(part["event"])),
                "corsika_scatter": corsika_rms,
                "model_scatter": float(np.median(model_rms)),
            }
        )
    return Table(rows=rows)


DISTANCE_CLASSES = ((0.0, 150.0), (150.0, 300.0), (300.0, np.inf))
_SUMMARY_ROWS = (
    # (label, column, CORSIKA column prefix, unit)
    ("photons (no CEFFIC files)", "photons", "corsika", ""),
    ("centroid offset", "centroid_offset", "corsika", "deg"),
    ("width", "width", "corsika", "deg"),
    ("length", "length", "corsika", "deg"),
    ("core width (16-84 %)", "core_width", "corsika", "deg"),
    ("core length (16-84 %)", "core_length", "corsika", "deg"),
    ("width (CORSIKA photon directions)", "width", "corsika_raw", "deg"),
    ("core width (CORSIKA photon directions)", "core_width", "corsika_raw", "deg"),
    ("arrival-time spread", "time_spread", "corsika", "ns"),
    ("median emission height above ground", "height_median", "corsika", "km"),
    ("emission-height spread", "height_spread", "corsika", "km"),
)


def summarise_photon_fields(table):
    """Per quantity: spheres compared, CORSIKA and model medians and the median of the per-sphere
    ratio model / CORSIKA in core-distance classes and overall. Photon counts are compared only
    where CORSIKA counted photons (not ``CEFFIC`` photo-electron-like weights); emission heights
    above the observation level. The first row compares the photons emitted by the whole shower
    with CORSIKA's longitudinal table, once per shower that has one."""
    rows = []
    distance = np.asarray(table["impact_distance"])
    for label, name, prefix, unit in _SUMMARY_ROWS:
        reference = np.asarray(table[f"{prefix}_{name}"], dtype=float)
        model = np.asarray(table[f"model_{name}"], dtype=float)
        if name == "height_median":
            reference = reference - np.asarray(table["observation_level"])
            model = model - np.asarray(table["observation_level"])
        usable = np.isfinite(reference) & np.isfinite(model) & (reference > 0)
        if name == "photons":
            usable &= ~np.asarray(table["efficiency_applied"])
        if not usable.any():  # photon counts only (`read_simtel_light_pool`)
            continue
        ratio = model / np.where(usable, reference, np.nan)
        row = {
            "quantity": label,
            "unit": unit,
            "spheres": int(usable.sum()),
            "CORSIKA median": float(np.median(reference[usable])),
            "model median": float(np.median(model[usable])),
        }
        for lo, hi in DISTANCE_CLASSES:
            members = usable & (distance >= lo) & (distance < hi)
            key = f"ratio {lo:.0f}-{hi:.0f} m" if np.isfinite(hi) else f"ratio > {lo:.0f} m"
            row[key] = float(np.median(ratio[members])) if members.any() else np.nan
        row["ratio all"] = float(np.median(ratio[usable]))
        rows.append(row)
    # the whole shower's Cherenkov photons (CORSIKA's longitudinal table), once per shower
    columns = ["file", "event", "corsika_emitted_photons", "model_emitted_photons"]
    showers = np.unique(np.asarray(table[columns]))
    showers = showers[np.isfinite(showers["corsika_emitted_photons"])]
    if len(showers):
        emitted = showers["model_emitted_photons"] / showers["corsika_emitted_photons"]
        rows.insert(0, {
            "quantity": "photons emitted by the whole shower (per shower)",
            "unit": "",
            "spheres": len(showers),
            "CORSIKA median": float(np.median(showers["corsika_emitted_photons"])),
            "model median": float(np.median(showers["model_emitted_photons"])),
            **{key: np.nan for key in rows[0] if key.startswith("ratio") and key != "ratio all"},
            "ratio all": float(np.median(emitted)),
        })
    summary = Table(rows=rows)
    for column in summary.colnames[3:]:
        summary[column] = np.round(summary[column], 3)
    return summary


# --- the detector part alone: CORSIKA photons through the project's camera model --------------
def model_photons_on_mirror(shower, index, view, mirror_area):
    """CORSIKA's photons at sphere ``index`` as the model's photons on the mirror: those crossing
    the mirror disc (area ``mirror_area``), their own directions, in the model's band and reduced by
    the model's atmospheric transmission from their emission points."""
    light, _, emission = corsika_light(shower, index, view, mirror_radius=np.sqrt(mirror_area / np.pi))
    sphere_height = shower.observation_level + shower.telescope_offsets[index, 2]
    transmission = _transmissions(shower.atmosphere.layers, emission, np.zeros(3), sphere_height)
    photons = light.photons / frank_tamm_band_factor(shower.band) * transmission
    return LightOnMirror(light.fov_lon, light.fov_lat, photons, light.time)


def _image_parameters(simulated, tel_id, calibrator, processor):
    """The DL1 image of a `SimulatedImage` (ctapipe's CameraCalibrator on the read-out's
    waveforms, as the simulator does, or the direct model's charges) and ctapipe's ImageProcessor
    on it: (image, peak time, mask, image parameters)."""
    from ctapipe.containers import ArrayEventContainer, CameraCalibrationContainer, DL1CameraContainer

    event = ArrayEventContainer()
    if getattr(simulated, "waveform", None) is None:
        peak_time = simulated.peak_time
        if peak_time is None:  # not triggered: times are only drawn for triggered cameras
            peak_time = np.zeros(len(simulated.true_image), dtype=np.float32)
        event.dl1.tel[tel_id] = DL1CameraContainer(image=simulated.image, peak_time=peak_time, is_valid=True)
    else:
        from .simulator import _r1_container

        event.r1.tel[tel_id] = _r1_container(simulated)
        event.monitoring.tel[tel_id].camera.coefficients = CameraCalibrationContainer(
            outlier_mask=np.zeros((2, len(simulated.true_image)), dtype=bool)
        )
        calibrator(event)
    processor(event)
    dl1 = event.dl1.tel[tel_id]
    return np.asarray(dl1.image, dtype=float), dl1.peak_time, dl1.image_mask, dl1.parameters


def _nanmedian(values):
    """Median of the finite values, NaN if there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else np.nan


def _relative_times(peak_time, image, mask):
    """Peak times relative to their charge-weighted mean in the mask (NaN without charge there)."""
    weight = np.where(mask, np.clip(image, 0, None), 0.0)
    if weight.sum() <= 0:
        return np.full(len(image), np.nan)
    return peak_time - np.sum(weight * peak_time) / np.sum(weight)


def _compare_images(model, real):
    """Pixel-by-pixel comparison of a model image with a real one, both as (image, peak times
    relative to their mean, cleaning mask, image parameters)."""
    image, peak_time, mask, parameters = model
    real_image, real_time, real_mask, real_parameters = real
    hillas, real_hillas = parameters.hillas, real_parameters.hillas
    model_time = _relative_times(peak_time, image, mask)
    union, both = mask | real_mask, mask & real_mask
    correlation = np.corrcoef(image[union], real_image[union])[0, 1] if union.sum() > 2 else np.nan
    time_residual = np.sqrt(np.mean((model_time[both] - real_time[both]) ** 2)) if both.any() else np.nan
    orientation = (hillas.psi - real_hillas.psi).to_value("deg")
    return {
        "charge_in_real_mask": image[real_mask].sum() / real_image[real_mask].sum(),
        "mask_overlap": both.sum() / max(union.sum(), 1),
        "pixel_correlation": correlation,
        "intensity_ratio": hillas.intensity / real_hillas.intensity,
        "width_ratio": (hillas.width / real_hillas.width).to_value(""),
        "length_ratio": (hillas.length / real_hillas.length).to_value(""),
        "cog_distance": np.hypot(
            (hillas.fov_lon - real_hillas.fov_lon).to_value("deg"),
            (hillas.fov_lat - real_hillas.fov_lat).to_value("deg"),
        ),
        # orientations are axes: differences modulo 180°, in [-90°, 90°)
        "psi_difference": (orientation + 90.0) % 180.0 - 90.0,
        "peak_time_rms": time_residual,
        # time gradients along the major axes, which may point either way
        "time_gradient_difference": abs(parameters.timing.slope.to_value("1/deg"))
        - abs(real_parameters.timing.slope.to_value("1/deg")),
    }


def compare_detector_images(showers, simtel_path, n_noise=20, seed=0, camera_config=None):
    """The CORSIKA photons of the showers in a sim_telarray file (event_id = 100 × CORSIKA event
    number + re-use index from 0) through the project's camera model (`CameraSimulator`, default
    settings or the `Config` ``camera_config``; ctapipe's calibrator and image processor take
    theirs from it too), against the sim_telarray images of the same showers, pixel by
    pixel. One row per telescope image: the true photo-electrons (model expectation vs
    sim_telarray's true image: sums and pixel correlation), and over ``n_noise`` camera
    realisations the medians of the cleaned-image comparison (charge in the sim_telarray cleaning
    mask, mask overlap, pixel correlation, Hillas parameters, peak-time residuals)."""
    from ctapipe.calib import CameraCalibrator
    from ctapipe.image import ImageProcessor, hillas_parameters
    from ctapipe.io import SimTelEventSource
    from traitlets.config import Config

    from .camera import CameraSimulator

    by_event = {(s.event_number, s.reuse): s for s in showers}
    source = SimTelEventSource(simtel_path)
    subarray = source.subarray
    config = Config(camera_config or {})
    calibrator = CameraCalibrator(subarray=subarray, config=config)
    processor = ImageProcessor(subarray=subarray, config=config)
    camera = CameraSimulator(config=config)
    rng = np.random.default_rng(seed)
    rows = []
    for event in source:
        key = (int(event.index.event_id) // 100, int(event.index.event_id) % 100 + 1)
        if key not in by_event:
            raise ValueError(f"{simtel_path}: event {event.index.event_id} has no CORSIKA shower {key}")
        shower = by_event[key]
        calibrator(event)
        processor(event)
        true_alt = event.simulation.shower.alt.to_value("rad")
        true_az = event.simulation.shower.az.to_value("rad")
        source_alt, source_az = shower.source_alt_az
        for tel_id, dl1 in event.dl1.tel.items():
            telescope = subarray.tel[tel_id]
            if "pointing" in event.fields:
                pointing = event.pointing.tel[tel_id]
            else:  # ctapipe <= 0.28
                pointing = event.monitoring.tel[tel_id].pointing
            # pointing in CORSIKA's frame: the same offset from the source as in sim_telarray's
            alt = source_alt + pointing.altitude.to_value("rad") - true_alt
            az = source_az + pointing.azimuth.to_value("rad") - true_az
            area = telescope.optics.mirror_area.to_value("m2")
            index = tel_id - 1
            view = telescope_view(shower, index, pointing=(alt, az), mirror_area=area)
            light = model_photons_on_mirror(shower, index, view, area)
            response = camera.response(telescope.camera)
            expected, mean_time = response.expected_photoelectrons(light, rng)
            true_image = np.asarray(event.simulation.tel[tel_id].true_image, dtype=float)
            real_mask, real_hillas = dl1.image_mask, dl1.parameters.hillas
            real_time = _relative_times(dl1.peak_time, dl1.image, real_mask)
            real = (np.asarray(dl1.image, dtype=float), real_time, real_mask, dl1.parameters)
            # images that fail the cleaning give NaN comparisons, left out of the medians
            with np.errstate(invalid="ignore", divide="ignore"):
                realisations = [
                    _compare_images(
                        _image_parameters(
                            response.digitize(expected, mean_time, rng), tel_id, calibrator, processor
                        ),
                        real,
                    )
                    for _ in range(n_noise)
                ]
            # noise-free shapes: the model's expected p.e. against sim_telarray's true image (the
            # optics alone, without night-sky background or cleaning)
            model_true = hillas_parameters(telescope.camera.geometry, expected)
            real_true = hillas_parameters(telescope.camera.geometry, true_image)
            row = {
                "event_id": int(event.index.event_id),
                "tel_id": tel_id,
                "impact_distance": float(event.simulation.tel[tel_id].impact.distance.to_value("m")),
                "sim_telarray_true_pe": float(true_image.sum()),
                "model_expected_pe": float(expected.sum()),
                "true_pe_pixel_correlation": float(np.corrcoef(expected, true_image)[0, 1]),
                "true_width_ratio": float(model_true.width / real_true.width),
                "true_length_ratio": float(model_true.length / real_true.length),
                "sim_telarray_intensity": float(real_hillas.intensity),
                "sim_telarray_width": float(real_hillas.width.to_value("deg")),
                "sim_telarray_length": float(real_hillas.length.to_value("deg")),
                "sim_telarray_peak_time_std": np.std(real_time[real_mask]) if real_mask.any() else np.nan,
                "sim_telarray_time_gradient": abs(dl1.parameters.timing.slope.to_value("1/deg")),
            }
            for name in realisations[0]:
                row[name] = _nanmedian([r[name] for r in realisations])
            rows.append(row)
    return Table(rows=rows)


def summarise_detector_comparison(table):
    """Medians over the images of `compare_detector_images` (and the true-p.e. ratio)."""
    rows = [
        ("true p.e. model / sim_telarray", table["model_expected_pe"] / table["sim_telarray_true_pe"]),
        ("true-image pixel correlation", table["true_pe_pixel_correlation"]),
        ("true-image width ratio", table["true_width_ratio"]),
        ("true-image length ratio", table["true_length_ratio"]),
        ("charge in the sim_telarray cleaning mask, ratio", table["charge_in_real_mask"]),
        ("cleaning-mask overlap (intersection / union)", table["mask_overlap"]),
        ("cleaned-image pixel correlation", table["pixel_correlation"]),
        ("Hillas intensity ratio", table["intensity_ratio"]),
        ("Hillas width ratio", table["width_ratio"]),
        ("Hillas length ratio", table["length_ratio"]),
        ("centroid distance [deg]", table["cog_distance"]),
        ("orientation difference abs(Δψ) [deg]", np.abs(table["psi_difference"])),
        ("peak-time residual RMS [ns]", table["peak_time_rms"]),
        ("sim_telarray peak-time spread in the mask [ns]", table["sim_telarray_peak_time_std"]),
        ("time gradient, abs(model) - abs(sim_telarray) [ns/deg]", table["time_gradient_difference"]),
        ("sim_telarray abs(time gradient) [ns/deg]", table["sim_telarray_time_gradient"]),
    ]
    summary = []
    for label, values in rows:
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        statistics = (np.median(values), values.min(), values.max()) if len(values) else (np.nan,) * 3
        summary.append((label, len(values), *(round(float(v), 3) for v in statistics)))
    return Table(
        rows=summary,
        names=("quantity", "images", "median", "min", "max"),
    )
