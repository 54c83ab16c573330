"""Point-like effective area and differential sensitivity of each analysis chain, with pyirf.

An analysis chain is one energy, one particle-type and one geometry reconstructor of the
subarray level, paired by their longest common prefix (``GammaPhysNetEnergy``,
``GammaPhysNetClassifier`` and ``GammaPhysNetGeometry`` form the chain ``GammaPhysNet``).
Each chain is evaluated on the events all three of its reconstructors reconstructed:

- cuts per bin of reconstructed energy, from the point-like gammas: the gammaness cut keeping
  ``gamma_efficiency`` of them, then the ``direction_containment`` radius of the distance to
  the true (source) direction of the gammas passing it. A bin with fewer than ``min_events``
  gammas has no cut (NaN) and its events are rejected;
- effective area vs true energy: selected gammas / simulated showers × π r_max², the simulated
  showers counted from each file's ``/configuration/simulation/run`` table (pyirf's
  ``SimulatedEventsInfo``, ``effective_area_per_energy``);
- differential sensitivity vs reconstructed energy (with diffuse proton files): gammas weighted
  to a Crab spectrum, protons to the cosmic-ray proton spectrum, both for
  ``observation_time``; background from the protons reconstructed in a ring of the field of
  view, scaled to the on region (``estimate_background``); 5 sigma (Li & Ma), at least 10
  signal events and a signal of at least 5 % of the background (``calculate_sensitivity``).

Inputs that do not allow a part (no simulation run table, no point-like gammas, no diffuse
protons, too few events) are reported as notes and logged; they are no error.
"""
import logging
import operator
import os
from dataclasses import dataclass, field
from itertools import product

import astropy.units as u
import numpy as np
import tables
from astropy.table import QTable, vstack
from ctapipe.core import Component
from ctapipe.core.traits import AstroQuantity, CaselessStrEnum, Float, Int
from ctapipe.io import read_table
from ctapipe.io.hdf5dataformat import SIMULATION_RUN_TABLE

from ..constants import GAMMA_ID, PROTON_ID
from .dl2 import FILE_INDEX, EventSample
from .metrics import angular_separation_deg

try:
    from pyirf import spectral
    from pyirf.binning import create_histogram_table
    from pyirf.cuts import calculate_percentile_cut, evaluate_binned_cut
    from pyirf.irf import effective_area_per_energy
    from pyirf.sensitivity import calculate_sensitivity, estimate_background
    from pyirf.simulations import SimulatedEventsInfo

    HAS_PYIRF = True
except ModuleNotFoundError:  # an optional dependency: the report then has no IRF section
    HAS_PYIRF = False

__all__ = [
    "AnalysisChain",
    "IRFInputError",
    "IRFResult",
    "PointLikeIRF",
    "Simulation",
    "analysis_chains",
    "chain_events",
    "simulation_from_runs",
    "read_simulation_runs",
]

log = logging.getLogger(__name__)

CRAB_SPECTRA = ("CRAB_HEGRA", "CRAB_MAGIC_JHEAP2015")
#: run-table columns that must agree between runs combined into one simulation
SAME_IN_EVERY_RUN = (
    "energy_range_min", "energy_range_max", "spectral_index", "max_scatter_range",
    "min_viewcone_radius", "max_viewcone_radius",
)
#: ... and for diffuse files, whose view-cone axis centres the background ring; point-like
#: gammas at several source positions (wobble offsets and angles) are combined, their effective
#: area is the average over those positions
SAME_DIRECTION = ("min_alt", "max_alt", "min_az", "max_az")
ENERGY_FLUX_UNIT = u.erg / (u.cm**2 * u.s)


class IRFInputError(ValueError):
    """The inputs do not allow an effective area or a sensitivity (the message says why)."""


@dataclass(frozen=True)
class AnalysisChain:
    """The energy, particle-type and geometry reconstructors used together."""

    energy: str
    classifier: str
    geometry: str

    @property
    def prefixes(self):
        return (self.energy, self.classifier, self.geometry)

    @property
    def name(self):
        common = os.path.commonprefix(self.prefixes)
        return common if common else "+".join(self.prefixes)


def analysis_chains(reconstructors):
    """Pair the subarray reconstructors (property -> prefixes) into analysis chains.

    Greedy: the triple with the longest common prefix first, each prefix used once.
    """
    names = [reconstructors.get(p, []) for p in ("energy", "particle_type", "geometry")]
    triples = sorted(product(*names), key=lambda t: -len(os.path.commonprefix(t)))
    chains, used = [], set()
    for triple in triples:
        keys = set(enumerate(triple))
        if used.isdisjoint(keys):
            chains.append(AnalysisChain(*triple))
            used |= keys
    return chains


@dataclass(frozen=True)
class Simulation:
    """Simulated showers of one particle type: pyirf's info and the simulated direction."""

    info: object  # pyirf SimulatedEventsInfo
    alt: u.Quantity  # centre of the simulated directions (the view cone's axis)
    az: u.Quantity
    sources: str  # the files, for messages

    @property
    def point_like(self):
        return self.info.viewcone_max <= 0 * u.deg


def read_simulation_runs(path):
    """The ``/configuration/simulation/run`` table of ``path``; IRFInputError if absent."""
    with tables.open_file(path) as h5file:
        if SIMULATION_RUN_TABLE not in h5file:
            raise IRFInputError(
                f"{path} has no {SIMULATION_RUN_TABLE} table: the number of simulated showers"
                " is unknown"
            )
    return QTable(read_table(path, SIMULATION_RUN_TABLE))  # Quantities, units kept


def simulation_from_runs(runs, sources, same_direction=True):
    """One :class:`Simulation` from run-table rows that share energy range, index, area, view
    cone and (with ``same_direction``) direction; the shower counts (with reuse) add up."""
    for name in SAME_IN_EVERY_RUN + (SAME_DIRECTION if same_direction else ()):
        values = u.Quantity(runs[name]).value
        if not np.allclose(values, values[0]):
            raise IRFInputError(f"{sources}: simulation runs differ in {name}, cannot combine")
    first = runs[0]
    if np.isclose(first["spectral_index"], -1):  # pyirf's power-law integrals divide by 0
        raise IRFInputError(f"{sources}: spectral index -1 is not supported by pyirf")
    n_showers = int(np.sum(np.asarray(runs["n_showers"]) * np.asarray(runs["shower_reuse"])))
    try:
        info = SimulatedEventsInfo(
            n_showers=n_showers,
            energy_min=u.Quantity(first["energy_range_min"], u.TeV),
            energy_max=u.Quantity(first["energy_range_max"], u.TeV),
            max_impact=u.Quantity(first["max_scatter_range"], u.m),
            spectral_index=float(first["spectral_index"]),
            viewcone_min=u.Quantity(first["min_viewcone_radius"], u.deg),
            viewcone_max=u.Quantity(first["max_viewcone_radius"], u.deg),
        )
    except ValueError as error:
        raise IRFInputError(f"{sources}: {error}") from None
    if n_showers <= 0:
        raise IRFInputError(f"{sources}: no simulated showers in {SIMULATION_RUN_TABLE}")
    alt = 0.5 * (u.Quantity(first["min_alt"]) + u.Quantity(first["max_alt"]))
    az = 0.5 * (u.Quantity(first["min_az"]) + u.Quantity(first["max_az"]))
    return Simulation(info, alt.to(u.deg), az.to(u.deg), sources)


def chain_events(sample, chain):
    """The events of ``sample`` every reconstructor of ``chain`` reconstructed, as a QTable of
    true/reconstructed energy, gammaness and true/reconstructed direction."""
    valid = (
        sample.valid(chain.energy, "energy")
        & sample.valid(chain.classifier, "particle_type")
        & sample.valid(chain.geometry, "geometry")
    )
    return QTable({
        "true_energy": sample.values("true_energy", valid, u.TeV) * u.TeV,
        "reco_energy": sample.values(f"{chain.energy}_energy", valid, u.TeV) * u.TeV,
        "gammaness": sample.values(f"{chain.classifier}_prediction", valid),
        "true_alt": sample.values("true_alt", valid, u.deg) * u.deg,
        "true_az": sample.values("true_az", valid, u.deg) * u.deg,
        "reco_alt": sample.values(f"{chain.geometry}_alt", valid, u.deg) * u.deg,
        "reco_az": sample.values(f"{chain.geometry}_az", valid, u.deg) * u.deg,
    })


def _separation(alt1, az1, alt2, az2):
    return angular_separation_deg(alt1, az1, alt2, az2) * u.deg


@dataclass
class _Particle:
    """The files of one particle type: their events per file and the combined simulation."""

    samples: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    paths: list = field(default_factory=list)

    def simulation(self, same_direction=True):
        return simulation_from_runs(vstack(self.runs, metadata_conflicts="silent"),
                                    ", ".join(map(str, self.paths)), same_direction)

    def events(self, chain):
        return vstack([chain_events(sample, chain) for sample in self.samples])


@dataclass
class IRFResult:
    """Tables (QTables with a ``reconstructor`` column = chain name) and notes of the IRF."""

    cuts: QTable = None
    effective_area: QTable = None
    sensitivity: QTable = None
    chains: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def note(self, message):
        log.warning(message)
        self.notes.append(message)


class PointLikeIRF(Component):
    """Point-like effective area and differential sensitivity of each analysis chain (pyirf)."""

    gamma_efficiency = Float(
        0.7, min=0.0, max=1.0,
        help="fraction of the gammas kept by the gammaness cut, per reconstructed-energy bin",
    ).tag(config=True)
    direction_containment = Float(
        0.68, min=0.0, max=1.0,
        help=(
            "direction cut: this containment radius of the gammas passing the gammaness cut,"
            " per reconstructed-energy bin"
        ),
    ).tag(config=True)
    observation_time = AstroQuantity(
        default_value=50 * u.hour, physical_type=u.physical.time,
        help="observation time of the sensitivity",
    ).tag(config=True)
    crab_spectrum = CaselessStrEnum(
        CRAB_SPECTRA, default_value="CRAB_HEGRA",
        help="pyirf's Crab Nebula spectrum: the gammas' weights and the sensitivity's unit",
    ).tag(config=True)
    alpha = Float(
        0.2, min=0.0, max=1.0, exclude_min=True,
        help="size of the on region over the size of the off regions",
    ).tag(config=True)
    background_offset_min = AstroQuantity(
        default_value=0 * u.deg, physical_type=u.physical.angle,
        help="inner radius of the ring of the field of view the background is taken from",
    ).tag(config=True)
    background_offset_max = AstroQuantity(
        default_value=1 * u.deg, physical_type=u.physical.angle,
        help=(
            "outer radius of that ring, around the axis of the protons' simulated view cone"
            " (the pointing of CTA simulations)"
        ),
    ).tag(config=True)
    min_background_events = Int(
        1, min=1,
        help="simulated protons in the ring needed for a sensitivity value in an energy bin",
    ).tag(config=True)

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        if self.background_offset_max <= self.background_offset_min:
            raise ValueError(
                f"background_offset_max ({self.background_offset_max}) must exceed"
                f" background_offset_min ({self.background_offset_min})"
            )

    @property
    def crab(self):
        return getattr(spectral, self.crab_spectrum)

    def __call__(self, paths, sample, energy_bins, min_events):
        """Cuts, effective area and sensitivity in ``energy_bins`` of every analysis chain of
        ``sample``, the subarray events `read_dl2_events` stacked from ``paths`` (None if
        there are none)."""
        result = IRFResult()
        if not HAS_PYIRF:
            result.note("pyirf is not installed: no effective area or sensitivity")
            return result
        result.chains = analysis_chains(sample.reconstructors) if sample is not None else []
        if not result.chains:
            result.note(
                "no analysis chain (an energy, a particle-type and a geometry reconstructor):"
                " no effective area or sensitivity"
            )
            return result
        gammas, protons = self._particles(paths, sample, result)
        if gammas is None:
            result.note(
                "no point-like gamma file with a simulation run table: no effective area or"
                " sensitivity"
            )
            return result
        try:
            gamma_simulation = gammas.simulation(same_direction=False)
            proton_simulation = protons.simulation() if protons is not None else None
        except IRFInputError as error:
            result.note(f"{error}: no effective area or sensitivity")
            return result
        if proton_simulation is None:
            result.note("no diffuse proton file with a simulation run table: no sensitivity")

        cuts, areas, sensitivities = [], [], []
        for chain in result.chains:
            gamma_events = gammas.events(chain)
            chain_cuts, selected = self._cuts(gamma_events, energy_bins, min_events)
            if not np.any(chain_cuts["defined"]):
                result.note(
                    f"{chain.name}: no reconstructed-energy bin has {min_events} gammas"
                    " passing the cuts: no effective area or sensitivity"
                )
                continue
            cuts.append(_labelled(chain_cuts, chain.name))
            areas.append(_labelled(self._effective_area(
                gamma_events, selected, gamma_simulation, energy_bins), chain.name))
            if proton_simulation is not None:
                sensitivities.append(_labelled(self.sensitivity(
                    gamma_events[selected], gamma_simulation, protons.events(chain),
                    proton_simulation, chain_cuts, min_events), chain.name))
        result.cuts = vstack(cuts) if cuts else None
        result.effective_area = vstack(areas) if areas else None
        result.sensitivity = vstack(sensitivities) if sensitivities else None
        return result

    @staticmethod
    def _particles(paths, sample, result):
        """Point-like gamma and diffuse proton files, with their events and simulation runs
        (each file's simulation counted on its own); others are noted and left out."""
        gammas, protons = _Particle(), _Particle()
        file_index = np.asarray(sample.table[FILE_INDEX])
        for index, path in enumerate(paths):
            try:
                runs = read_simulation_runs(path)
            except IRFInputError as error:
                result.note(f"{error}; file not used for the effective area or sensitivity")
                continue
            events = EventSample(sample.name, sample.table[file_index == index], sample.reconstructors)
            if len(events.table) == 0:
                result.note(f"{path}: no subarray event; file not used for the effective area or"
                            " sensitivity")
                continue
            primaries = np.unique(np.asarray(events.table["true_shower_primary_id"]))
            point_like = bool(np.all(u.Quantity(runs["max_viewcone_radius"]).value <= 0))
            if primaries.tolist() == [GAMMA_ID] and point_like:
                particle = gammas
            elif primaries.tolist() == [PROTON_ID] and not point_like:
                particle = protons
            else:
                result.note(
                    f"{path}: primaries {primaries.tolist()}, "
                    f"{'point-like' if point_like else 'diffuse'} simulation: only point-like"
                    f" gammas ({GAMMA_ID}) and diffuse protons ({PROTON_ID}) are used for the"
                    " effective area and sensitivity"
                )
                continue
            particle.samples.append(events)
            particle.runs.append(runs)
            particle.paths.append(path)
        return (gammas if gammas.samples else None), (protons if protons.samples else None)

    def _cuts(self, gammas, bins, min_events):
        """Gammaness and direction cuts per reconstructed-energy bin, and the gammas passing."""
        theta = _separation(gammas["true_alt"], gammas["true_az"],
                            gammas["reco_alt"], gammas["reco_az"])
        gammaness_cut = calculate_percentile_cut(
            gammas["gammaness"], gammas["reco_energy"], bins, fill_value=np.nan,
            percentile=100 * (1 - self.gamma_efficiency), min_events=min_events,
        )
        passing = evaluate_binned_cut(gammas["gammaness"], gammas["reco_energy"],
                                      gammaness_cut, operator.ge)
        theta_cut = calculate_percentile_cut(
            theta[passing], gammas["reco_energy"][passing], bins, fill_value=np.nan * u.deg,
            percentile=100 * self.direction_containment, min_events=min_events,
        )
        # NaN cuts (too few gammas) compare False: their events are rejected
        selected = passing & evaluate_binned_cut(theta, gammas["reco_energy"], theta_cut,
                                                 operator.le)
        cuts = QTable({
            "low": gammaness_cut["low"], "high": gammaness_cut["high"],
            "center": gammaness_cut["center"], "n_gammas": gammaness_cut["n_events"],
            "gammaness_cut": gammaness_cut["cut"],
            "n_gammas_passing": theta_cut["n_events"], "theta_cut": theta_cut["cut"],
        })
        cuts["defined"] = np.isfinite(cuts["gammaness_cut"]) & np.isfinite(cuts["theta_cut"])
        cuts.meta.update(gamma_efficiency=self.gamma_efficiency,
                         direction_containment=self.direction_containment,
                         min_events=min_events)
        return cuts, selected

    @staticmethod
    def _effective_area(gammas, selected, simulation, bins):
        """Effective area vs true energy of the reconstructed and of the selected gammas."""
        n_simulated = simulation.info.calculate_n_showers_per_energy(bins)
        simulated = n_simulated > 0  # outside the simulated energy range: no value (NaN)
        table = QTable({
            "low": bins[:-1], "high": bins[1:], "center": np.sqrt(bins[:-1] * bins[1:]),
            "n_simulated": n_simulated,
            "n_reconstructed": np.histogram(gammas["true_energy"], bins)[0],
            "n_selected": np.histogram(gammas["true_energy"][selected], bins)[0],
        })
        for column, events in (("effective_area_reconstructed", gammas),
                               ("effective_area", gammas[selected])):
            area = np.full(len(table), np.nan) * u.m**2
            with np.errstate(invalid="ignore", divide="ignore"):
                area[simulated] = effective_area_per_energy(events, simulation.info,
                                                            bins)[simulated]
            table[column] = area
        table.meta["max_impact"] = str(simulation.info.max_impact)
        table.meta["n_showers"] = simulation.info.n_showers
        return table

    def sensitivity(self, signal, gamma_simulation, protons, proton_simulation, cuts,
                    min_events):
        """Differential sensitivity per reconstructed-energy bin of ``cuts``.

        ``signal``: the gammas passing the cuts; ``protons``: the reconstructed protons,
        cut here with the gammaness cut of ``cuts``.
        """
        bins = np.append(cuts["low"], cuts["high"][-1])
        time = self.observation_time
        signal = QTable(signal, copy=True)
        signal["weight"] = spectral.calculate_event_weights(
            signal["true_energy"], self.crab,
            spectral.PowerLaw.from_simulation(gamma_simulation.info, time),
        )
        cut_table = QTable({"low": cuts["low"], "high": cuts["high"],
                            "center": cuts["center"], "cut": cuts["gammaness_cut"]})
        background = protons[evaluate_binned_cut(protons["gammaness"], protons["reco_energy"],
                                                 cut_table, operator.ge)]
        background["weight"] = spectral.calculate_event_weights(
            background["true_energy"], spectral.IRFDOC_PROTON_SPECTRUM,
            spectral.PowerLaw.from_simulation(proton_simulation.info, time),
        )
        background["reco_source_fov_offset"] = _separation(
            background["reco_alt"], background["reco_az"],
            proton_simulation.alt, proton_simulation.az,
        )
        in_ring = ((background["reco_source_fov_offset"] >= self.background_offset_min)
                   & (background["reco_source_fov_offset"] < self.background_offset_max))

        signal_hist = create_histogram_table(signal, bins, "reco_energy")
        theta_cuts = QTable({"center": cuts["center"], "cut": cuts["theta_cut"]})
        background_hist = estimate_background(
            background, bins, theta_cuts, self.alpha, self.background_offset_min,
            self.background_offset_max,
        )
        with np.errstate(invalid="ignore"):  # NaN for bins without cuts, flagged below
            pyirf_table = calculate_sensitivity(signal_hist, background_hist, alpha=self.alpha)

        n_signal_mc = np.asarray(signal_hist["n"])
        n_background_mc = np.histogram(background["reco_energy"][in_ring], bins)[0]
        relative = np.asarray(pyirf_table["relative_sensitivity"], dtype=float)
        status = np.full(len(relative), "ok", dtype="<U32")
        status[~np.isfinite(relative)] = "no solution"
        status[n_background_mc < self.min_background_events] = "too few background events"
        status[n_signal_mc < min_events] = "too few gammas"
        missing = status != "ok"
        relative[missing] = np.nan

        center = np.sqrt(bins[:-1] * bins[1:])
        flux = relative * self.crab(center)
        table = QTable({
            "low": bins[:-1], "high": bins[1:], "center": center,
            "n_signal_mc": n_signal_mc, "n_background_mc": n_background_mc,
            "n_signal": np.where(missing, np.nan, pyirf_table["n_signal_weighted"]),
            "n_background": self.alpha * np.asarray(pyirf_table["n_background_weighted"]),
            "significance": np.where(missing, np.nan, pyirf_table["significance"]),
            "relative_sensitivity": relative,
            "flux_sensitivity": flux.to(1 / (u.TeV * u.cm**2 * u.s)),
            "energy_flux_sensitivity": (center**2 * flux).to(ENERGY_FLUX_UNIT),
            "status": status,
        })
        table.meta.update(
            observation_time=str(time), crab_spectrum=self.crab_spectrum, alpha=self.alpha,
            background_ring=f"{self.background_offset_min} - {self.background_offset_max}",
        )
        return table

    def crab_energy_flux(self, energy):
        """E² × the Crab spectrum at ``energy``, in erg cm⁻² s⁻¹ (the figure's reference)."""
        return (energy**2 * self.crab(energy)).to(ENERGY_FLUX_UNIT)


def _labelled(table, name):
    table.add_column(name, name="reconstructor", index=0)
    return table
