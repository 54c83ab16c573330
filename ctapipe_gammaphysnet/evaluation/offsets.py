"""Metrics resolved by the source position in the field of view: what a direction prior does.

A network trained with an L1 loss on directions pulls uncertain images toward the centre of its
training distribution; a test source sitting there flatters the angular resolution. These
metrics, of the subarray events, show such a pull:

- point-like samples: the gammas of one DL2 file that all come from one direction (a source at
  some offset and position angle from the pointing). Per sample: 68 % angular resolution, AUC
  against every background event, median predicted offset from the pointing and the
  predicted-offset bias (median of predicted − true offset), also per band of true energy with
  the median predicted position (fov_lon, fov_lat); per energy band, all samples together: the
  2-D histogram of the predicted source positions in the field of view (a pull toward the
  camera centre or any fixed point shows as a shift from the marked true positions) and the θ²
  distribution;
- diffuse gammas (every other gamma) and the background: angular resolution, offset bias and
  AUC per bin of the true offset from the pointing (the background binned by the offset of its
  own arrival direction).

The pointing of each event is its observation block's (``subarray_pointing_lat/lon`` in the
alt/az frame, as ctapipe writes it for simulations); files without one are left out, with a
note. Each property is evaluated on the events the report uses for it (``used``).
"""
import logging
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
import tables
from astropy.table import QTable, vstack
from ctapipe.containers import CoordinateFrameType
from ctapipe.core import Component
from ctapipe.core.traits import Float, Int, List
from ctapipe.io import read_table
from ctapipe.io.hdf5dataformat import OBSERVATION_BLOCK_TABLE

from . import plots, report_render
from .dl2 import FILE_INDEX, EventSample
from .metrics import (
    angular_resolution,
    angular_separation_deg,
    binned,
    field_of_view_position,
    predicted_offset_bias,
    roc_auc,
)

__all__ = ["OffsetResolvedMetrics", "OffsetResult", "event_pointing", "point_like_samples"]

log = logging.getLogger(__name__)

#: gammas of a file closer than this (deg) to each other come from one point-like source
POINT_LIKE_SPREAD = 1e-3
DIRECTION_COLUMNS = ["angular_resolution", "median_reco_offset", "offset_bias"]
AUC_COLUMNS = ["auc", "n_gamma", "n_background"]


def _sample_name(path):
    name = Path(path).name
    for suffix in (".h5", ".hdf5", ".dl2"):
        name = name.removesuffix(suffix)
    return name


def event_pointing(paths, table, notes):
    """Pointing (alt, az) in deg of every event of ``table`` (stacked from ``paths``, with
    their ``file_index``), from the files' observation blocks; NaN where a file has none."""
    alt, az = np.full(len(table), np.nan), np.full(len(table), np.nan)
    file_index = np.asarray(table[FILE_INDEX])
    obs_id = np.asarray(table["obs_id"])
    for index, path in enumerate(paths):
        in_file = file_index == index
        if not np.any(in_file):
            continue
        with tables.open_file(path) as h5file:
            has_blocks = OBSERVATION_BLOCK_TABLE in h5file
        if not has_blocks:
            notes.append(f"{path}: no observation block (pointing): left out of the offset metrics")
            continue
        blocks = read_table(path, OBSERVATION_BLOCK_TABLE)
        for block in blocks:
            if int(block["subarray_pointing_frame"]) != CoordinateFrameType.ALTAZ.value:
                notes.append(f"{path}: obs_id {block['obs_id']} points in frame "
                             f"{CoordinateFrameType(int(block['subarray_pointing_frame'])).name},"
                             " not alt/az: left out of the offset metrics")
                continue
            selected = in_file & (obs_id == int(block["obs_id"]))
            alt[selected] = u.Quantity(block["subarray_pointing_lat"], u.deg).value
            az[selected] = u.Quantity(block["subarray_pointing_lon"], u.deg).value
    return alt, az


@dataclass
class PointLikeSample:
    """The gammas of one file that come from one source position."""

    name: str
    mask: np.ndarray  # of the events the offset metrics see
    offset: float  # deg from the pointing
    position_angle: float  # deg in [0, 360), from +fov_lat towards +fov_lon
    fov_lon: float
    fov_lat: float


def point_like_samples(paths, events, is_gamma, true_lon, true_lat, true_offset):
    """The point-like samples among the gammas of ``events``: one per file whose gammas all come
    from one direction (within ``POINT_LIKE_SPREAD``)."""
    file_index = np.asarray(events[FILE_INDEX])
    samples = []
    for index, path in enumerate(paths):
        mask = is_gamma & (file_index == index)
        if not np.any(mask):
            continue
        lon, lat = true_lon[mask], true_lat[mask]
        spread = angular_separation_deg(lat, lon, lat[0], lon[0])
        if spread.max() > POINT_LIKE_SPREAD:
            continue
        samples.append(PointLikeSample(
            _sample_name(path), mask, float(np.median(true_offset[mask])),
            float(np.mod(np.degrees(np.arctan2(np.median(lon), np.median(lat))), 360)),
            float(np.median(lon)), float(np.median(lat)),
        ))
    return samples


def _direction_metrics(separation, reco_offset, true_offset):
    return (angular_resolution(separation), float(np.median(reco_offset)),
            predicted_offset_bias(true_offset, reco_offset))


def _direction_metrics_and_position(separation, reco_offset, true_offset, reco_lon, reco_lat):
    return (*_direction_metrics(separation, reco_offset, true_offset),
            float(np.median(reco_lon)), float(np.median(reco_lat)))


def _auc_and_counts(labels, scores):
    return roc_auc(labels, scores), np.count_nonzero(labels), np.count_nonzero(~labels)


def _point_row(prefix, sample, n_events, values, names):
    row = {"reconstructor": prefix, "sample": sample.name, "low": sample.offset,
           "high": sample.offset, "center": sample.offset, "position_angle": sample.position_angle,
           "n_events": n_events}
    row.update(zip(names, values))
    return row


def _diffuse_rows(table, prefix):
    table.add_column(prefix, name="reconstructor", index=0)
    table.add_column("diffuse", name="sample", index=1)
    table["position_angle"] = np.nan
    return table


class _Events:
    """The subarray events with a known pointing and what every reconstructor's metrics share:
    true directions in the field of view, true offsets and energies, the point-like selection."""

    def __init__(self, sample, pointing_alt, pointing_az):
        self.sample = sample
        self.pointing_alt, self.pointing_az = pointing_alt, pointing_az
        self.true_alt = sample.values("true_alt", slice(None), u.deg)
        self.true_az = sample.values("true_az", slice(None), u.deg)
        self.true_energy = sample.values("true_energy", slice(None), u.TeV)
        self.true_lon, self.true_lat = field_of_view_position(self.true_alt, self.true_az,
                                                              pointing_alt, pointing_az)
        self.true_offset = angular_separation_deg(self.true_alt, self.true_az, pointing_alt,
                                                  pointing_az)
        self.is_gamma = sample.is_gamma
        self.set_point_like([])

    def set_point_like(self, samples):
        self.in_point_like = np.zeros(len(self.is_gamma), dtype=bool)
        for point_sample in samples:
            self.in_point_like |= point_sample.mask
        self.diffuse_gamma = self.is_gamma & ~self.in_point_like


@dataclass
class OffsetResult:
    """Tables (QTables) of the offset-resolved metrics, the point-like samples and notes."""

    geometry: QTable = None  # per reconstructor: diffuse offset bins and point-like samples
    auc: QTable = None
    point_like_energy: QTable = None  # per point-like sample and true-energy band
    fov_maps: QTable = None  # per reconstructor and energy band: counts (fov_lon, fov_lat)
    theta_squared: QTable = None
    samples: list = field(default_factory=list)
    notes: list = field(default_factory=list)


class OffsetResolvedMetrics(Component):
    """Angular resolution, AUC and predicted-offset bias by true offset from the pointing and per
    point-like sample; maps of predicted source positions and θ² distributions per energy band."""

    offset_bins = List(
        Float(), default_value=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
        help="edges (deg) of the bins of true offset from the pointing (diffuse gammas and the"
             " background)",
    ).tag(config=True)
    energy_bands = List(
        Float(), default_value=[0.01, 0.1, 1.0, 10.0, 100.0],
        help="edges (TeV) of the true-energy bands of the point-like gammas' metrics, maps of"
             " predicted positions and θ² distributions",
    ).tag(config=True)
    fov_map_radius = Float(
        2.5, min=0.1, help="half width (deg) of the maps of predicted source positions"
    ).tag(config=True)
    fov_map_bins = Int(50, min=2, help="bins per axis of those maps").tag(config=True)
    theta_squared_max = Float(0.5, min=0.001, help="upper edge (deg²) of the θ² histograms").tag(
        config=True)
    theta_squared_bins = Int(50, min=2, help="bins of the θ² histograms").tag(config=True)

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        for name, edges, low in (("offset_bins", self.offset_bins, 0.0),
                                 ("energy_bands", self.energy_bands, 1e-9)):
            if len(edges) < 2 or np.any(np.diff(edges) <= 0) or edges[0] < low:
                raise ValueError(f"{name} must be at least two increasing edges >= {low},"
                                 f" got {edges}")

    def __call__(self, paths, sample: EventSample, used, min_events):
        """Offset-resolved metrics of the subarray events ``sample`` stacked from ``paths``;
        ``used``: property -> prefix -> mask of the events the report uses for it."""
        result = OffsetResult()
        pointing_alt, pointing_az = event_pointing(paths, sample.table, result.notes)
        known = np.isfinite(pointing_alt) & np.isfinite(pointing_az)
        if not np.any(known):
            result.notes.append("no event with a known pointing: no offset-resolved metrics")
            return result
        events = _Events(EventSample(sample.name, sample.table[known], sample.reconstructors),
                         pointing_alt[known], pointing_az[known])
        used = {prop: {prefix: mask[known] for prefix, mask in masks.items()}
                for prop, masks in used.items()}
        result.samples = point_like_samples(paths, events.sample.table, events.is_gamma,
                                            events.true_lon, events.true_lat, events.true_offset)
        events.set_point_like(result.samples)

        parts = {name: [] for name in ("geometry", "per_band", "maps", "theta_squared", "auc")}
        for prefix in events.sample.reconstructors.get("geometry", []):
            for name, part in self._geometry(events, prefix, used["geometry"][prefix],
                                             result.samples, min_events).items():
                parts[name] += part
        for prefix in events.sample.reconstructors.get("particle_type", []):
            parts["auc"] += self._auc(events, prefix, used["particle_type"][prefix],
                                      result.samples, min_events)

        result.geometry = _stack(parts["geometry"], u.deg, [
            "low", "high", "center", "position_angle", *DIRECTION_COLUMNS])
        result.auc = _stack(parts["auc"], u.deg, ["low", "high", "center", "position_angle"])
        result.point_like_energy = _stack(parts["per_band"], u.deg, [
            *DIRECTION_COLUMNS, "median_reco_fov_lon", "median_reco_fov_lat", "true_offset",
            "true_fov_lon", "true_fov_lat"])
        if result.samples:
            result.fov_maps = _stack(parts["maps"])
            # set after stacking, which would concatenate the parts' lists
            result.fov_maps.meta["fov_edges_deg"] = self.fov_edges.tolist()
            result.theta_squared = _stack(parts["theta_squared"])
        else:
            result.notes.append("no point-like gamma sample (a file whose gammas all come from one"
                                " direction): no maps of predicted positions, no θ² distributions")
        return result

    def _geometry(self, events, prefix, used, samples, min_events):
        """Tables of one geometry reconstructor: diffuse bins and point-like rows, per energy band,
        maps of predicted positions and θ² histograms."""
        mask = used & events.is_gamma
        reco_alt = events.sample.values(f"{prefix}_alt", mask, u.deg)
        reco_az = events.sample.values(f"{prefix}_az", mask, u.deg)
        pointing = (events.pointing_alt[mask], events.pointing_az[mask])
        separation = angular_separation_deg(events.true_alt[mask], events.true_az[mask], reco_alt,
                                            reco_az)
        reco_offset = angular_separation_deg(reco_alt, reco_az, *pointing)
        reco_lon, reco_lat = field_of_view_position(reco_alt, reco_az, *pointing)

        def arrays(selection):
            """The direction metrics' arrays of the events in ``selection`` (among ``mask``)."""
            inside = selection[mask]
            return separation[inside], reco_offset[inside], events.true_offset[selection & mask]

        diffuse = binned(_direction_metrics, events.true_offset[events.diffuse_gamma & mask],
                         self.offset_edges, *arrays(events.diffuse_gamma), min_events=min_events,
                         names=DIRECTION_COLUMNS)
        parts = {"geometry": [_diffuse_rows(diffuse, prefix)], "per_band": []}
        rows = []
        for point_sample in samples:
            selected = arrays(point_sample.mask)
            n_events = len(selected[0])
            values = (_direction_metrics(*selected) if n_events >= min_events
                      else (np.nan,) * len(DIRECTION_COLUMNS))
            rows.append(_point_row(prefix, point_sample, n_events, values, DIRECTION_COLUMNS))
            inside = point_sample.mask[mask]
            bands = binned(
                _direction_metrics_and_position,
                events.true_energy[point_sample.mask & mask] * u.TeV, self.band_edges * u.TeV,
                *selected, reco_lon[inside], reco_lat[inside], min_events=min_events,
                names=DIRECTION_COLUMNS + ["median_reco_fov_lon", "median_reco_fov_lat"])
            bands.add_column(prefix, name="reconstructor", index=0)
            bands.add_column(point_sample.name, name="sample", index=1)
            bands["true_offset"] = point_sample.offset
            bands["true_fov_lon"] = point_sample.fov_lon
            bands["true_fov_lat"] = point_sample.fov_lat
            parts["per_band"].append(bands)
        if rows:
            parts["geometry"].append(QTable(rows=rows))
        pooled = events.in_point_like[mask]
        energy = events.true_energy[mask][pooled]
        parts["maps"] = [self._fov_maps(prefix, energy, reco_lon[pooled], reco_lat[pooled])]
        parts["theta_squared"] = [self._theta_squared(prefix, energy, separation[pooled])]
        return parts

    def _auc(self, events, prefix, used, samples, min_events):
        """AUC of one classifier: diffuse gammas and background per true-offset bin, and each
        point-like sample against every background event."""
        scores = events.sample.values(f"{prefix}_prediction", slice(None))
        is_gamma = events.is_gamma
        diffuse = used & (events.diffuse_gamma | ~is_gamma)
        table = binned(_auc_and_counts, events.true_offset[diffuse], self.offset_edges,
                       is_gamma[diffuse], scores[diffuse], min_events=min_events,
                       names=AUC_COLUMNS)
        parts = [_diffuse_rows(table, prefix)]
        rows = []
        for point_sample in samples:
            selected = used & (point_sample.mask | ~is_gamma)
            labels = is_gamma[selected]
            n_gamma, n_background = np.count_nonzero(labels), np.count_nonzero(~labels)
            auc = (roc_auc(labels, scores[selected])
                   if min(n_gamma, n_background) >= min_events else np.nan)
            rows.append(_point_row(prefix, point_sample, len(labels), (auc, n_gamma, n_background),
                                   AUC_COLUMNS))
        if rows:
            parts.append(QTable(rows=rows))
        return parts

    @property
    def offset_edges(self):
        return np.asarray(self.offset_bins, dtype=float)

    @property
    def band_edges(self):
        return np.asarray(self.energy_bands, dtype=float)

    @property
    def fov_edges(self):
        return np.linspace(-self.fov_map_radius, self.fov_map_radius, self.fov_map_bins + 1)

    def _fov_maps(self, prefix, true_energy, lon, lat):
        edges, band_edges = self.fov_edges, self.band_edges
        band = np.digitize(true_energy, band_edges) - 1
        counts = np.stack([np.histogram2d(lon[band == i], lat[band == i], [edges, edges])[0]
                           for i in range(len(band_edges) - 1)]).astype(int)
        table = QTable({
            "reconstructor": [prefix] * (len(band_edges) - 1),
            "energy_low": band_edges[:-1] * u.TeV, "energy_high": band_edges[1:] * u.TeV,
            "n_events": np.bincount(band[(band >= 0) & (band < len(band_edges) - 1)],
                                    minlength=len(band_edges) - 1),
            "counts": counts,  # (band, fov_lon bin, fov_lat bin)
        })
        return table

    def _theta_squared(self, prefix, true_energy, separation):
        edges = np.linspace(0, self.theta_squared_max, self.theta_squared_bins + 1)
        band_edges = self.band_edges
        tables_ = []
        band = np.digitize(true_energy, band_edges) - 1
        for i in range(len(band_edges) - 1):
            tables_.append(QTable({
                "reconstructor": [prefix] * (len(edges) - 1),
                "energy_low": np.full(len(edges) - 1, band_edges[i]) * u.TeV,
                "energy_high": np.full(len(edges) - 1, band_edges[i + 1]) * u.TeV,
                "low": edges[:-1] * u.deg**2, "high": edges[1:] * u.deg**2,
                "n_events": np.histogram(separation[band == i] ** 2, edges)[0],
            }))
        return vstack(tables_)

    # ------------------------------------------------------------------ output
    def write_section(self, paths, sample, used, min_events, references, output_dir):
        """Compute the metrics, write their figures and tables; returns the HTML section."""
        result = self(paths, sample, used, min_events)
        for note in result.notes:
            log.warning(note)
        figures = []
        if result.geometry is not None:
            figures += [
                ("offset_angular", "Angular resolution vs true offset", result.geometry,
                 plots.plot_vs_offset(result.geometry, "angular_resolution",
                                      "68 % containment / deg", references,
                                      "angular resolution (gammas)")),
                ("offset_bias", "Median predicted offset vs true offset", result.geometry,
                 plots.plot_vs_offset(result.geometry, "median_reco_offset",
                                      "median predicted offset / deg", references,
                                      "predicted vs true offset (gammas)", diagonal=True)),
            ]
        if result.auc is not None:
            figures.append(("offset_auc", "AUC vs true offset", result.auc, plots.plot_vs_offset(
                result.auc, "auc", "AUC", references, "AUC (gammas vs background)")))
        if result.point_like_energy is not None:
            figures.append(("point_like_bias", "Predicted-offset bias of the point-like samples"
                            " vs true energy", result.point_like_energy,
                            plots.plot_offset_bias_per_sample(result.point_like_energy,
                                                              references)))
        if result.fov_maps is not None:
            figures.append(("fov_maps", "Predicted source positions of the point-like gammas"
                            " per true-energy band (true positions +, pointing ×)",
                            result.fov_maps, plots.plot_fov_maps(
                                result.fov_maps, [(s.fov_lon, s.fov_lat) for s in result.samples],
                                references, min_events)))
            figures.append(("theta_squared", "θ² distributions of the point-like gammas per"
                            " true-energy band", result.theta_squared,
                            plots.plot_theta_squared(result.theta_squared, references)))
        return report_render.offsets_section(
            [s.name for s in result.samples], result.notes,
            report_render.write_figures(Path(output_dir), figures))


def _stack(parts, unit=None, columns=()):
    """The tables of ``parts`` stacked (None if there are none), ``columns`` in ``unit``."""
    if not parts:
        return None
    table = vstack(parts, metadata_conflicts="silent")
    for name in columns:
        table[name] = u.Quantity(np.asarray(u.Quantity(table[name]).value, dtype=float), unit)
    return table
