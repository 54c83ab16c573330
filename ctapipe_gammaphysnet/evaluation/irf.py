"""Point-like effective area and differential sensitivity of each analysis chain, by ctapipe.

The IRFs are ctapipe's (``ctapipe.irf``, pyirf underneath), computed the way its two tools
``ctapipe-optimize-event-selection`` and ``ctapipe-compute-irf`` compute them: the events of
each file read by ctapipe's ``DL2EventLoader`` (quality query, column names, θ and offsets,
event weights), the cuts by ctapipe's ``PercentileCuts`` (the gammaness cut keeping
``gamma_efficiency`` of the gammas per reconstructed-energy bin, then the
``direction_containment`` radius of those passing it), the effective area after both cuts by
``EffectiveArea2dMaker`` (point-like gammas, ``RAD_MAX`` applied) and the differential
sensitivity by ``Sensitivity2dMaker`` (gammas weighted to ctapipe's Crab spectrum, protons to
its cosmic-ray proton spectrum, background from the protons reconstructed in a ring of the
field of view around the pointing, 5 σ Li & Ma, ≥ 10 signal events, signal ≥ 5 % of the
background).

What this module adds, because ctapipe lacks it:

- the analysis chains: an energy, a particle-type and a geometry reconstructor of the
  subarray level, paired by their longest common prefix (``GammaPhysNetEnergy``,
  ``GammaPhysNetClassifier`` and ``GammaPhysNetGeometry`` form the chain ``GammaPhysNet``);
  ctapipe's tools take one triple of prefixes per run;
- several files per particle type: ctapipe's tools and its loader read one gamma and one
  proton file, and ``ctapipe-merge`` refuses files sharing an ``obs_id``, which the simulated
  samples do (the demo's point-like gammas come in six files, one per source position, all
  ``obs_id`` 1). Each file is read by ctapipe's loader and the events are stacked; the
  simulated showers are counted from the ``/configuration/simulation/run`` tables of all the
  files, which must agree in energy range, index, area and view cone (ctapipe 0.28's loader
  would also leave out ``shower_reuse``); the effective area of point-like gammas at several
  source positions is their average;
- why a sensitivity value is missing (the ``status`` column), and no value where no simulated
  proton is left in the background ring: pyirf then answers a sensitivity set by the 10
  signal events alone, which is no background estimate.

Inputs that do not allow a part (no simulation run table, no point-like gammas, no diffuse
protons, too few events) are reported as notes and logged; they are no error.
"""
import logging
import operator
import os
from dataclasses import dataclass, field
from enum import Enum
from itertools import product

import astropy.units as u
import numpy as np
import tables
from astropy.table import QTable, vstack
from ctapipe.core import Component
from ctapipe.core.traits import AstroQuantity, Float, Int, UseEnum
from ctapipe.io import read_table
from ctapipe.io.hdf5dataformat import SIMULATION_RUN_TABLE
from traitlets.config import Config

from ..constants import GAMMA_ID, PROTON_ID
from .dl2 import FILE_INDEX

try:
    from ctapipe.io.dl2_tables_preprocessing import DL2EventLoader
    from ctapipe.irf import (
        SPECTRA,
        EffectiveArea2dMaker,
        PercentileCuts,
        Sensitivity2dMaker,
        Spectra,
        ThetaPercentileCutCalculator,
    )
    from pyirf.cuts import evaluate_binned_cut
    from pyirf.simulations import SimulatedEventsInfo
    from pyirf.spectral import PowerLaw

    HAS_PYIRF = True
except ModuleNotFoundError:  # an optional dependency: the report then has no IRF section
    HAS_PYIRF = False

    # the option's choices, for --help-all without pyirf
    Spectra = Enum("Spectra", ["CRAB_HEGRA"])

__all__ = [
    "AnalysisChain",
    "IRFInputError",
    "IRFResult",
    "PointLikeIRF",
    "Simulation",
    "analysis_chains",
    "simulation_from_runs",
    "read_simulation_runs",
]

log = logging.getLogger(__name__)

#: run-table columns that must agree between runs combined into one simulation
SAME_IN_EVERY_RUN = (
    "energy_range_min", "energy_range_max", "spectral_index", "max_scatter_range",
    "min_viewcone_radius", "max_viewcone_radius",
)
#: ... and for diffuse files, whose view-cone axis is the pointing of the background ring;
#: point-like gammas at several source positions (wobble offsets and angles) are combined
SAME_DIRECTION = ("min_alt", "max_alt", "min_az", "max_az")
#: events read per chunk by ctapipe's loader
CHUNK_SIZE = 100_000


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
    """The simulated showers of the files of one particle type (pyirf's SimulatedEventsInfo)."""

    info: object
    sources: str  # the files, for messages


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
    if n_showers <= 0:
        raise IRFInputError(f"{sources}: no simulated showers in {SIMULATION_RUN_TABLE}")
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
    return Simulation(info, sources)


@dataclass
class _Particle:
    """The files of one particle type and their simulation runs."""

    runs: list = field(default_factory=list)
    paths: list = field(default_factory=list)

    def simulation(self, same_direction=True):
        return simulation_from_runs(vstack(self.runs, metadata_conflicts="silent"),
                                    ", ".join(map(str, self.paths)), same_direction)


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
    """Point-like effective area and differential sensitivity of each analysis chain, computed
    by ctapipe's IRF components (``ctapipe.irf``) as ``ctapipe-compute-irf`` does."""

    gamma_efficiency = Float(
        0.7, min=0.0, max=1.0,
        help=(
            "fraction of the gammas kept by the gammaness cut, per reconstructed-energy bin"
            " (ctapipe's GhPercentileCutCalculator.target_percentile, whole percents)"
        ),
    ).tag(config=True)
    direction_containment = Float(
        0.68, min=0.0, max=1.0,
        help=(
            "direction cut: this containment radius of the gammas passing the gammaness cut,"
            " per reconstructed-energy bin (ctapipe's"
            " ThetaPercentileCutCalculator.target_percentile, whole percents; no upper limit)"
        ),
    ).tag(config=True)
    observation_time = AstroQuantity(
        default_value=50 * u.hour, physical_type=u.physical.time,
        help="observation time of the sensitivity",
    ).tag(config=True)
    gamma_target_spectrum = UseEnum(
        Spectra, default_value=Spectra.CRAB_HEGRA,
        help="ctapipe's spectrum of the gammas: their weights and the sensitivity's unit",
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
        default_value=1.5 * u.deg, physical_type=u.physical.angle,
        help=(
            "outer radius of that ring around the pointing; only the gammas whose source lies"
            " inside the ring count as signal (Sensitivity2dMaker's field-of-view bin)"
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
    def gamma_spectrum(self):
        return SPECTRA[self.gamma_target_spectrum]

    def crab_energy_flux(self, energy):
        """E² × the gamma spectrum at ``energy``, in erg cm⁻² s⁻¹ (the figure's reference)."""
        return (energy**2 * self.gamma_spectrum(energy)).to(u.erg / (u.cm**2 * u.s))

    def ctapipe_config(self, chain, energy_min, energy_max, bins_per_decade, min_events):
        """The configuration of ctapipe's IRF components for ``chain``."""
        # "no limit" is None from ctapipe 0.29 on, a negative angle before
        no_limit = None if ThetaPercentileCutCalculator.theta_max_angle.allow_none else -1 * u.deg
        energy = dict(reco_energy_min=energy_min, reco_energy_max=energy_max,
                      reco_energy_n_bins_per_decade=bins_per_decade)
        return Config({
            "DL2EventPreprocessor": {
                "energy_reconstructor": chain.energy,
                "geometry_reconstructor": chain.geometry,
                "gammaness_classifier": chain.classifier,
            },
            "DL2EventQualityQuery": {"quality_criteria": [
                (f"valid {prefix}", f"{prefix}_is_valid") for prefix in chain.prefixes]},
            "PercentileCuts": energy,
            "GhPercentileCutCalculator": {
                "target_percentile": round(100 * self.gamma_efficiency), "min_counts": min_events},
            "ThetaPercentileCutCalculator": {
                "target_percentile": round(100 * self.direction_containment),
                "min_counts": min_events, "theta_max_angle": no_limit,
                # bins with too few gammas: no cut, their events rejected
                "theta_fill_value": np.nan * u.deg,
            },
            "EffectiveArea2dMaker": dict(true_energy_min=energy_min, true_energy_max=energy_max,
                                         true_energy_n_bins_per_decade=bins_per_decade),
            "Sensitivity2dMaker": {
                **energy, "alpha": self.alpha, "fov_offset_n_bins": 1,
                "fov_offset_min": self.background_offset_min,
                "fov_offset_max": self.background_offset_max,
            },
        })

    def __call__(self, paths, sample, energy_min, energy_max, bins_per_decade, min_events):
        """Cuts, effective area and sensitivity of every analysis chain of ``sample``, the
        subarray events `read_dl2_events` stacked from ``paths`` (None if there are none),
        in ``bins_per_decade`` bins per decade from ``energy_min`` to ``energy_max``."""
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
            config = self.ctapipe_config(chain, energy_min, energy_max, bins_per_decade,
                                         min_events)
            try:
                gamma_events, quality_query = self._events(
                    gammas, gamma_simulation, "gammas", self.gamma_target_spectrum, config)
                proton_events = (self._events(protons, proton_simulation, "protons",
                                              Spectra.IRFDOC_PROTON_SPECTRUM, config)[0]
                                 if proton_simulation is not None else None)
            except (NotImplementedError, ValueError) as error:  # ctapipe's loader refusing
                result.note(f"{chain.name}: {error}: no effective area or sensitivity")
                continue
            cut_result = PercentileCuts(config=config)(
                events={"signal": gamma_events}, quality_query=quality_query,
                clf_prefix=chain.classifier)
            chain_cuts, selected = _cuts_table(gamma_events, cut_result, min_events)
            if not np.any(chain_cuts["defined"]):
                result.note(
                    f"{chain.name}: no reconstructed-energy bin has {min_events} gammas"
                    " passing the cuts: no effective area or sensitivity"
                )
                continue
            cuts.append(_labelled(chain_cuts, chain.name))
            areas.append(_labelled(self._effective_area(
                gamma_events, selected, gamma_simulation, config), chain.name))
            if proton_events is not None:
                passing = evaluate_binned_cut(proton_events["gh_score"],
                                              proton_events["reco_energy"], cut_result.gh_cuts,
                                              operator.ge)
                sensitivities.append(_labelled(self._sensitivity(
                    gamma_events[selected], proton_events[passing], cut_result, config,
                    min_events), chain.name))
        result.cuts = vstack(cuts) if cuts else None
        result.effective_area = vstack(areas) if areas else None
        result.sensitivity = vstack(sensitivities) if sensitivities else None
        return result

    @staticmethod
    def _particles(paths, sample, result):
        """Point-like gamma and diffuse proton files with their simulation runs; others are
        noted and left out."""
        gammas, protons = _Particle(), _Particle()
        file_index = np.asarray(sample.table[FILE_INDEX])
        primary_ids = np.asarray(sample.table["true_shower_primary_id"])
        for index, path in enumerate(paths):
            try:
                runs = read_simulation_runs(path)
            except IRFInputError as error:
                result.note(f"{error}; file not used for the effective area or sensitivity")
                continue
            primaries = np.unique(primary_ids[file_index == index])
            if len(primaries) == 0:
                result.note(f"{path}: no subarray event; file not used for the effective area or"
                            " sensitivity")
                continue
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
            particle.runs.append(runs)
            particle.paths.append(path)
        return (gammas if gammas.paths else None), (protons if protons.paths else None)

    def _events(self, particle, simulation, kind, spectrum, config):
        """The events of every file of ``particle`` read by ctapipe's loader, stacked and
        weighted to ``spectrum`` with the showers of all the files; and the quality query."""
        loaders = [DL2EventLoader(file=path, target_spectrum=spectrum, config=config)
                   for path in particle.paths]
        loaders[0].log.addFilter(_showers_counted_here)
        try:
            events = vstack([loader.load_preselected_events(CHUNK_SIZE, self.observation_time)[0]
                             for loader in loaders], metadata_conflicts="silent")
        finally:
            loaders[0].log.removeFilter(_showers_counted_here)
        simulated = PowerLaw.from_simulation(simulation.info, obstime=self.observation_time)
        return loaders[0].make_event_weights(events, simulated, kind), loaders[0].epp.quality_query

    @staticmethod
    def _effective_area(gammas, selected, simulation, config):
        """ctapipe's effective area vs true energy of the gammas passing both cuts."""
        maker = EffectiveArea2dMaker(config=config)
        with np.errstate(invalid="ignore", divide="ignore"):  # outside the simulated range
            hdu = maker(events=gammas[selected], spatial_selection_applied=True,
                        signal_is_point_like=True, sim_info=simulation.info)
        irf = QTable.read(hdu)
        bins = maker.true_energy_bins
        n_simulated = simulation.info.calculate_n_showers_per_energy(bins)
        # outside the simulated energy range: no value (NaN)
        area = np.where(n_simulated > 0, irf["EFFAREA"][0, 0], np.nan)
        table = QTable({
            "low": bins[:-1], "high": bins[1:], "center": np.sqrt(bins[:-1] * bins[1:]),
            "n_simulated": n_simulated,
            "n_selected": np.histogram(gammas["true_energy"][selected], bins)[0],
            "effective_area": area,
        })
        table.meta["max_impact"] = str(simulation.info.max_impact)
        table.meta["n_showers"] = simulation.info.n_showers
        return table

    def _sensitivity(self, signal, background, cut_result, config, min_events):
        """ctapipe's differential sensitivity per reconstructed-energy bin, with the reason
        of each missing value."""
        maker = Sensitivity2dMaker(config=config)
        # a bin without a direction cut selects no gamma; its cut 0 rather than NaN, because
        # ctapipe interpolates the cuts to its sensitivity bins, which differ from the cut bins
        # by rounding: a NaN would spread to the neighbouring bins
        theta_cuts = QTable(cut_result.spatial_selection_table, copy=True)
        theta_cuts["cut"][~np.isfinite(theta_cuts["cut"])] = 0 * u.deg
        with np.errstate(invalid="ignore", divide="ignore"):  # flagged below
            hdu = maker(signal_events=signal, background_events=background,
                        spatial_selection_table=theta_cuts,
                        gamma_spectrum=self.gamma_target_spectrum)
        irf = QTable.read(hdu)
        low, high = irf["ENERG_LO"][0], irf["ENERG_HI"][0]
        n_signal_mc = np.histogram(signal["reco_energy"][_in_ring(signal, "true", maker)],
                                   maker.reco_energy_bins)[0]
        n_background_mc = np.histogram(
            background["reco_energy"][_in_ring(background, "reco", maker)],
            maker.reco_energy_bins)[0]
        relative = np.asarray(irf["RELATIVE_SENSITIVITY"][0, 0], dtype=float)
        status = np.full(len(relative), "ok", dtype="<U32")
        status[~np.isfinite(relative)] = "no solution"
        status[n_background_mc < self.min_background_events] = "too few background events"
        status[n_signal_mc < min_events] = "too few gammas"
        missing = status != "ok"

        def values(name):
            column = irf[name][0, 0].astype(float)
            column[missing] = np.nan
            return column

        table = QTable({
            # ctapipe evaluates the flux at the arithmetic centre of the bin (pyirf's bin_center)
            "low": low, "high": high, "center": 0.5 * (low + high),
            "n_signal_mc": n_signal_mc, "n_background_mc": n_background_mc,
            "n_signal": values("N_SIGNAL_WEIGHTED"),
            "n_background": self.alpha * np.asarray(irf["N_BACKGROUND_WEIGHTED"][0, 0]),
            "significance": values("SIGNIFICANCE"),
            "relative_sensitivity": values("RELATIVE_SENSITIVITY"),
            "flux_sensitivity": values("FLUX_SENSITIVITY"),
            "energy_flux_sensitivity": values("ENERGY_FLUX_SENSITIVITY"),
            "status": status,
        })
        table.meta.update(
            observation_time=str(self.observation_time),
            gamma_target_spectrum=self.gamma_target_spectrum.name, alpha=self.alpha,
            background_ring=f"{self.background_offset_min} - {self.background_offset_max}",
        )
        return table


def _showers_counted_here(record):
    """ctapipe's loader warns, file by file, that it counts the simulated showers from the run
    table; its count is not used here (see the module's docstring)."""
    return "Simulation distributions were not found" not in record.getMessage()


def _in_ring(events, prefix, maker):
    offset = events[f"{prefix}_source_fov_offset"]
    return (offset >= maker.fov_offset_bins[0]) & (offset < maker.fov_offset_bins[-1])


def _cuts_table(gammas, cut_result, min_events):
    """The gammaness and direction cuts of ctapipe's ``OptimizationResult`` per reconstructed-
    energy bin as one table, and the gammas passing both."""
    gh, theta = cut_result.gh_cuts, cut_result.spatial_selection_table
    passing = evaluate_binned_cut(gammas["gh_score"], gammas["reco_energy"], gh, operator.ge)
    # NaN cuts (too few gammas) compare False: their events are rejected
    selected = passing & evaluate_binned_cut(gammas["theta"], gammas["reco_energy"], theta,
                                             operator.le)
    cuts = QTable({
        "low": gh["low"], "high": gh["high"], "center": gh["center"],
        "n_gammas": gh["n_events"],
        # ctapipe's cut in a bin with too few gammas is their highest gammaness
        "gammaness_cut": np.where(gh["n_events"] >= min_events, gh["cut"], np.nan),
        "n_gammas_passing": theta["n_events"], "theta_cut": theta["cut"],
    })
    cuts["defined"] = np.isfinite(cuts["gammaness_cut"]) & np.isfinite(cuts["theta_cut"])
    return cuts, selected


def _labelled(table, name):
    table.add_column(name, name="reconstructor", index=0)
    return table
