"""The performance report: metrics of every reconstructor found in simulated DL2 files.

For each level (subarray events, and telescope events of each telescope type) and each
reconstructed property, the metrics of ``metrics.py`` are computed per true-energy bin:
AUC and ROC curves (particle type, gammas vs everything else), energy bias and resolution
and 68 % angular resolution (gammas only). Every figure is written as PNG together with an
ECSV table of what it shows, and an HTML page collects them; reconstructors matching
``reference_prefixes`` are compared side by side with the others. When the inputs allow it,
the point-like effective area and sensitivity of each analysis chain are added (``irf.py``).
The energy migration matrix accompanies bias and resolution, and the subarray events are also
resolved by source position in the field of view (``offsets.py``).
"""
import html
import io
import logging
from pathlib import Path

import astropy.units as u
import numpy as np
import tables
from astropy.table import QTable, vstack
from ctapipe.core import Component
from ctapipe.io import TableLoader
from ctapipe.core.traits import AstroQuantity, Bool, Int, List, Unicode
from ctapipe.io.hdf5dataformat import DL1_TEL_IMAGES_GROUP

from ..constants import GAMMA_ID
from . import plots
from .dl2 import DL2InputError, EventSample, read_dl2_events
from .irf import PointLikeIRF
from .metrics import (
    angular_resolution,
    angular_separation_deg,
    binned,
    energy_bias_resolution,
    energy_migration,
    roc_auc,
    roc_curve,
)
from .offsets import OffsetResolvedMetrics

__all__ = ["PerformanceReport"]

log = logging.getLogger(__name__)

#: property -> (table name, metric column compared with the reference, lower is better)
COMPARED = {
    "particle_type": ("auc", "auc", False),
    "energy": ("energy", "resolution", True),
    "geometry": ("angular", "angular_resolution", True),
}


def _energy_arrays(sample, prefix, mask):
    return (
        sample.values("true_energy", mask, u.TeV),
        sample.values(f"{prefix}_energy", mask, u.TeV),
    )


def _separation_arrays(sample, prefix, mask):
    separation = angular_separation_deg(
        sample.values("true_alt", mask, u.deg),
        sample.values("true_az", mask, u.deg),
        sample.values(f"{prefix}_alt", mask, u.deg),
        sample.values(f"{prefix}_az", mask, u.deg),
    )
    return (separation,)


#: gamma-only metrics vs true energy: (property, table name, metric, its arrays, its columns)
GAMMA_METRICS = (
    ("energy", "energy", energy_bias_resolution, _energy_arrays, ["bias", "resolution"]),
    ("geometry", "angular", angular_resolution, _separation_arrays, ["angular_resolution"]),
)


def _auc_and_counts(labels, scores):
    return roc_auc(labels, scores), np.count_nonzero(labels), np.count_nonzero(~labels)


def _thin(n_points, max_points):
    """Indices of at most ``max_points`` points along a curve, end points included."""
    if n_points <= max_points:
        return np.arange(n_points)
    return np.unique(np.linspace(0, n_points - 1, max_points).round().astype(int))


def _format_for_html(table):
    table = QTable(table, copy=True)
    for column in table.itercols():
        if column.dtype.kind == "f":
            column.info.format = ".4g"
    buffer = io.StringIO()
    table.write(buffer, format="ascii.html")
    text = buffer.getvalue()
    return text[text.index("<table"): text.index("</table>") + len("</table>")]


class PerformanceReport(Component):
    """Compare the reconstructors of simulated DL2 files: metrics per energy bin, figures, HTML."""

    energy_min = AstroQuantity(
        default_value=0.01 * u.TeV, physical_type=u.physical.energy,
        help="lower edge of the first true-energy bin",
    ).tag(config=True)
    energy_max = AstroQuantity(
        default_value=100 * u.TeV, physical_type=u.physical.energy,
        help="upper edge of the last true-energy bin",
    ).tag(config=True)
    bins_per_decade = Int(5, min=1, help="true-energy bins per decade").tag(config=True)
    min_events = Int(
        10, min=1, help="bins with fewer events get no metric value (NaN, not plotted)"
    ).tag(config=True)
    reference_prefixes = List(
        Unicode(),
        default_value=[],
        help=(
            "prefixes of the reference reconstructors (e.g. ctapipe's RandomForest models): a"
            " reconstructor whose prefix starts with one of these is the reference its"
            " property's other reconstructors are compared with"
        ),
    ).tag(config=True)
    common_events = Bool(
        True,
        help=(
            "compare each property on the same events: those every reconstructor of that"
            " property reconstructed (valid fractions are reported separately)"
        ),
    ).tag(config=True)
    telescope_level = Bool(
        True, help="also evaluate telescope-level results (<prefix>_tel), per telescope type"
    ).tag(config=True)
    n_gammaness_bins = Int(40, min=2, help="bins of the gammaness histograms").tag(config=True)
    n_images = Int(4, min=0, help="camera images shown with their predictions").tag(config=True)
    image_hillas = Bool(True, help="draw the Hillas ellipse on the camera images").tag(config=True)
    max_roc_points = Int(
        300, min=10, help="points kept per ROC curve in figures and tables (AUC uses all)"
    ).tag(config=True)

    offset_metrics = Bool(
        True,
        help=(
            "metrics by true offset from the pointing and per point-like sample, maps of the"
            " predicted source positions, θ² distributions: see OffsetResolvedMetrics"
        ),
    ).tag(config=True)
    point_like_irf = Bool(
        True,
        help=(
            "point-like effective area and sensitivity of each analysis chain (pyirf), when"
            " the inputs allow it: see PointLikeIRF"
        ),
    ).tag(config=True)

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        if self.energy_max <= self.energy_min:
            raise ValueError(
                f"energy_max ({self.energy_max}) must exceed energy_min ({self.energy_min})"
            )
        self.irf = PointLikeIRF(parent=self)
        self.offsets = OffsetResolvedMetrics(parent=self)

    @property
    def energy_bins(self):
        decades = np.log10((self.energy_max / self.energy_min).to_value(u.one))
        n_bins = max(1, int(np.ceil(decades * self.bins_per_decade - 1e-9)))
        return np.geomspace(self.energy_min.to_value(u.TeV), self.energy_max.to_value(u.TeV),
                            n_bins + 1) * u.TeV

    def is_reference(self, prefix):
        return any(prefix.startswith(reference) for reference in self.reference_prefixes)

    def __call__(self, paths, output_dir):
        """Read ``paths``, compute every metric, write figures, tables and report.html.

        Returns the summary table (one row per level, property, reconstructor and metric).
        """
        samples = read_dl2_events(paths, telescope_level=self.telescope_level)
        self._check_particles(paths, next(iter(samples.values())))
        output_dir = Path(output_dir)
        sections = []
        summaries = []
        comparisons = []
        for sample in samples.values():
            results = self.evaluate(sample)
            summaries.append(results.pop("summary"))
            if "comparison" in results:
                comparisons.append(results.pop("comparison"))
            sections.append(self._write_level(sample, results, output_dir))
        summary = vstack(summaries)
        summary.write(output_dir / "summary.ecsv")
        comparison = vstack(comparisons) if comparisons else None
        if comparison is not None:
            comparison.write(output_dir / "comparison.ecsv")
        if self.offset_metrics and "subarray" in samples:
            sections.append(self._write_offsets(paths, samples["subarray"], output_dir))
        if self.point_like_irf:
            sections.append(self._write_irf(paths, samples.get("subarray"), output_dir))
        images_section = self._write_images(paths, samples, output_dir)
        self._write_html(output_dir, paths, summary, comparison, sections, images_section)
        return summary

    @staticmethod
    def _check_particles(paths, sample):
        files = ", ".join(map(str, paths))
        if not np.any(sample.is_gamma):
            raise DL2InputError(f"no gamma events in {files}: the report measures the gamma "
                                "reconstruction; give a gamma file too")
        if np.all(sample.is_gamma):
            log.warning("no background events in %s: the AUC, ROC curves and gammaness "
                        "distributions cannot be computed; give a proton file too", files)

    # ------------------------------------------------------------------ metrics
    def _selections(self, sample, property_name):
        """Per prefix: own valid events, and the events its metrics use."""
        prefixes = sample.reconstructors.get(property_name, [])
        valid = {prefix: sample.valid(prefix, property_name) for prefix in prefixes}
        if self.common_events and valid:
            common = np.logical_and.reduce(list(valid.values()))
            return valid, {prefix: common for prefix in prefixes}
        return valid, valid

    def evaluate(self, sample: EventSample):
        """Per-bin and overall metric tables of one level, as a dict of QTables."""
        edges = self.energy_bins
        is_gamma = sample.is_gamma
        true_energy = sample.values("true_energy", slice(None), u.TeV) * u.TeV
        results = {}
        summary_rows = []

        def summary_row(property_name, prefix, n_events, valid, used, metric, value):
            summary_rows.append({
                "level": sample.name, "property": property_name, "reconstructor": prefix,
                "reference": self.is_reference(prefix), "n_events": n_events,
                "valid_fraction": np.count_nonzero(valid) / n_events if n_events else np.nan,
                "n_used": np.count_nonzero(used), "metric": metric, "value": float(value),
            })

        valid, used = self._selections(sample, "particle_type")
        auc_tables, roc_tables, histograms = [], [], []
        # gamma/hadron separation needs both (gammas only: no AUC rather than a NaN)
        classifiers = sample.reconstructors.get("particle_type", []) if not np.all(is_gamma) else []
        for prefix in classifiers:
            mask = used[prefix]
            labels = is_gamma[mask]
            scores = sample.values(f"{prefix}_prediction", mask)
            table = binned(_auc_and_counts, true_energy[mask], edges, labels, scores,
                           min_events=self.min_events, names=["auc", "n_gamma", "n_background"])
            auc_tables.append(self._label(table, prefix))
            roc_tables += self._roc_tables(prefix, table, true_energy[mask], labels, scores)
            histograms.append(self._gammaness_histogram(prefix, labels, scores))
            summary_row("particle_type", prefix, len(sample.table), valid[prefix], mask, "auc",
                        roc_auc(labels, scores))
        if auc_tables:
            results["auc"] = vstack(auc_tables)
            results["roc"] = vstack(roc_tables) if roc_tables else None
            results["gammaness"] = vstack(histograms)

        for property_name, name, metric_fn, arrays_fn, columns in GAMMA_METRICS:
            valid, used = self._selections(sample, property_name)
            per_prefix = []
            for prefix in sample.reconstructors.get(property_name, []):
                mask = used[prefix] & is_gamma
                arrays = arrays_fn(sample, prefix, mask)
                table = binned(metric_fn, true_energy[mask], edges, *arrays,
                               min_events=self.min_events, names=columns)
                per_prefix.append(self._label(table, prefix))
                for column, value in zip(columns, np.atleast_1d(metric_fn(*arrays))):
                    summary_row(property_name, prefix, np.count_nonzero(is_gamma),
                                valid[prefix] & is_gamma, mask, column, value)
            if per_prefix:
                results[name] = vstack(per_prefix)
        if "angular" in results:
            results["angular"]["angular_resolution"] *= u.deg
        _, used = self._selections(sample, "energy")
        migrations = [_migration_table(prefix, *_energy_arrays(sample, prefix, used[prefix] & is_gamma),
                                       edges)
                      for prefix in sample.reconstructors.get("energy", [])]
        if migrations:
            results["energy_migration"] = vstack(migrations)

        results = {k: v for k, v in results.items() if v is not None}
        results["summary"] = QTable(rows=summary_rows)
        comparison = self._compare(sample, results)
        if comparison is not None:
            results["comparison"] = comparison
        return results

    @staticmethod
    def _label(table, prefix):
        table.add_column(prefix, name="reconstructor", index=0)
        return table

    def _roc_tables(self, prefix, auc_table, true_energy, labels, scores):
        result = []
        for row in auc_table:
            if not np.isfinite(row["auc"]):
                continue
            in_bin = (true_energy >= row["low"]) & (true_energy < row["high"])
            fpr, tpr, thresholds = roc_curve(labels[in_bin], scores[in_bin])
            keep = _thin(len(fpr), self.max_roc_points)
            n = len(keep)
            result.append(QTable({
                "reconstructor": [prefix] * n, "low": row["low"] * np.ones(n),
                "high": row["high"] * np.ones(n),
                "false_positive_rate": fpr[keep], "true_positive_rate": tpr[keep],
                "threshold": thresholds[keep],
            }))
        return result

    def _gammaness_histogram(self, prefix, labels, scores):
        edges = np.linspace(0, 1, self.n_gammaness_bins + 1)
        outside = np.count_nonzero((scores < 0) | (scores > 1))
        if outside:
            log.warning("%s: %d gammaness value(s) outside [0, 1] not histogrammed", prefix,
                        outside)
        return QTable({
            "reconstructor": [prefix] * (len(edges) - 1), "low": edges[:-1], "high": edges[1:],
            "n_gamma": np.histogram(scores[labels], edges)[0],
            "n_background": np.histogram(scores[~labels], edges)[0],
        })

    def _compare(self, sample, results):
        """Side by side per energy bin: each reconstructor vs its property's reference."""
        rows = []
        for property_name, (name, column, lower_is_better) in COMPARED.items():
            prefixes = sample.reconstructors.get(property_name, [])
            references = [p for p in prefixes if self.is_reference(p)]
            if not references or name not in results:
                continue
            if len(references) > 1:
                log.warning("%s %s: several references %s, comparing with %s", sample.name,
                            property_name, references, references[0])
            table = results[name]
            reference = table[table["reconstructor"] == references[0]]
            for prefix in prefixes:
                if self.is_reference(prefix):
                    continue
                ours = table[table["reconstructor"] == prefix]
                for row, ref_row in zip(ours, reference):
                    value = u.Quantity(row[column]).value
                    ref_value = u.Quantity(ref_row[column]).value
                    rows.append({
                        "level": sample.name, "property": property_name, "metric": column,
                        "reconstructor": prefix, "reference": references[0],
                        "low": row["low"], "high": row["high"], "n_events": row["n_events"],
                        "value": value, "reference_value": ref_value,
                        "difference": value - ref_value,
                        "ratio": value / ref_value if ref_value != 0 else np.nan,
                        "better": bool(value < ref_value if lower_is_better
                                       else value > ref_value),
                    })
        return QTable(rows=rows) if rows else None

    # ------------------------------------------------------------------ output
    def _write_level(self, sample, results, output_dir):
        """Write the figures and tables of one level; returns its HTML section."""
        references = {p for ps in sample.reconstructors.values() for p in ps
                      if self.is_reference(p)}
        level = sample.name
        figures = []
        if "roc" in results:
            figures.append(("roc", f"ROC curves per true-energy bin ({level})",
                            plots.plot_roc_curves(results["roc"], results["auc"], references)))
        if "auc" in results:
            figures.append(("auc", f"AUC vs true energy ({level})", plots.plot_binned(
                results["auc"], "auc", "AUC", references, f"AUC ({level})")))
        if "gammaness" in results:
            figures.append(("gammaness", f"Gammaness distributions ({level})",
                            plots.plot_gammaness(results["gammaness"], references)))
        if "energy" in results:
            figures.append(("energy", f"Energy bias and resolution ({level}, gammas)",
                            plots.plot_energy_bias_resolution(
                                results["energy"], references, f"energy ({level})")))
        if "energy_migration" in results:
            figures.append(("energy_migration", f"Energy migration matrix ({level}, gammas)",
                            plots.plot_energy_migration(results["energy_migration"], references)))
        if "angular" in results:
            figures.append(("angular", f"Angular resolution, 68 % containment ({level}, gammas)",
                            plots.plot_binned(results["angular"], "angular_resolution",
                                              "68 % containment / deg", references,
                                              f"angular resolution ({level})")))
        parts = [f"<h2>{html.escape(level)}</h2>"]
        for name, title, fig in figures:
            stem = f"{name}_{level}"
            fig.savefig(output_dir / f"{stem}.png", dpi=100)
            results[name].write(output_dir / f"{stem}.ecsv")
            parts.append(
                f'<h3>{html.escape(title)}</h3><img src="{stem}.png" alt="{html.escape(title)}">'
                f'<p>table: <a href="{stem}.ecsv">{stem}.ecsv</a></p>'
            )
        return "\n".join(parts)

    def _write_offsets(self, paths, sample, output_dir):
        """The section of the metrics by source position (subarray events)."""
        used = {prop: self._selections(sample, prop)[1] for prop in ("geometry", "particle_type")}
        references = {p for ps in sample.reconstructors.values() for p in ps if self.is_reference(p)}
        return self.offsets.write_section(paths, sample, used, self.min_events, references,
                                          output_dir)

    def _write_irf(self, paths, subarray_sample, output_dir):
        """Cuts, effective area and sensitivity of the analysis chains; returns their section."""
        result = self.irf(paths, subarray_sample, self.energy_bins, self.min_events)
        references = {chain.name for chain in result.chains
                      if all(self.is_reference(p) for p in chain.prefixes)}
        irf = self.irf
        parts = [
            "<h2>Point-like effective area and sensitivity (subarray)</h2>",
            "<p>Analysis chains: " + ", ".join(
                html.escape(f"{c.name} = {c.energy} + {c.classifier} + {c.geometry}")
                for c in result.chains) + ".</p>" if result.chains else "",
            f"<p>Cuts per reconstructed-energy bin, from the point-like gammas: the gammaness"
            f" cut keeping {irf.gamma_efficiency:.0%} of them, then the"
            f" {irf.direction_containment:.0%} containment radius of the passing gammas'"
            f" distance to the source; bins with fewer than {self.min_events} gammas have no cut"
            f" and their events are rejected. Sensitivity: {irf.observation_time}, Crab"
            f" spectrum {irf.crab_spectrum}, protons weighted to IRFDOC_PROTON_SPECTRUM in a"
            f" {irf.background_offset_min}–{irf.background_offset_max} ring of the field of"
            f" view, α = {irf.alpha}; 5σ (Li &amp; Ma), ≥ 10 signal events, signal ≥ 5 % of the"
            " background. A missing sensitivity value says why in the <code>status</code>"
            " column; the effective area is missing outside the simulated energy range.</p>",
        ]
        if result.notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
                         + "</ul>")
        if result.cuts is not None:
            result.cuts.write(output_dir / "irf_cuts.ecsv")
            parts.append('<p>cuts: <a href="irf_cuts.ecsv">irf_cuts.ecsv</a></p>')
        figures = []
        if result.effective_area is not None:
            figures.append(("effective_area", "Effective area after cuts vs true energy",
                            result.effective_area, plots.plot_binned(
                                result.effective_area, "effective_area",
                                "effective area / "
                                f"{result.effective_area['effective_area'].unit:latex_inline}",
                                references, "effective area after cuts (point-like gammas)",
                                log_y=True)))
        if result.sensitivity is not None:
            energy = np.geomspace(self.energy_bins[0], self.energy_bins[-1], 100)
            figures.append(("sensitivity",
                            f"Differential sensitivity vs reconstructed energy"
                            f" ({irf.observation_time})",
                            result.sensitivity, plots.plot_sensitivity(
                                result.sensitivity, references, energy,
                                irf.crab_energy_flux(energy), irf.crab_spectrum)))
        for stem, title, table, fig in figures:
            fig.savefig(output_dir / f"{stem}.png", dpi=100)
            table.write(output_dir / f"{stem}.ecsv")
            parts.append(
                f'<h3>{html.escape(title)}</h3><img src="{stem}.png" alt="{html.escape(title)}">'
                f'<p>table: <a href="{stem}.ecsv">{stem}.ecsv</a></p>'
            )
        return "\n".join(parts)

    def _write_images(self, paths, samples, output_dir):
        if self.n_images == 0:
            return ""
        images, rows = _select_camera_images(paths, samples, self.n_images)
        if not images:
            log.info("no DL1 images in the DL2 files: no camera image figure")
            return ""
        fig = plots.plot_camera_images(images, hillas=self.image_hillas)
        fig.savefig(output_dir / "camera_images.png", dpi=80)
        QTable(rows=rows).write(output_dir / "camera_images.ecsv")
        return (
            '<h2>Camera images with predictions</h2><img src="camera_images.png"'
            ' alt="camera images"><p>table: <a href="camera_images.ecsv">'
            "camera_images.ecsv</a></p>"
        )

    def _write_html(self, output_dir, paths, summary, comparison, sections, images_section):
        inputs = "".join(f"<li>{html.escape(str(p))}</li>" for p in paths)
        comparison_html = ""
        if comparison is not None:
            comparison_html = (
                "<h2>Comparison with the reference, per true-energy bin</h2>"
                "<p>ratio = value / reference value; difference = value − reference value;"
                " better: lower resolution or higher AUC than the reference. The verdict is on"
                " all the gammas of the input files together: averaged over the source offsets"
                " of the test samples (per offset: the section on the source position)."
                ' Table: <a href="comparison.ecsv">comparison.ecsv</a></p>'
                + _format_for_html(comparison)
            )
        page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Reconstruction performance</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} img{{max-width:100%}}</style>
</head><body>
<h1>Reconstruction performance</h1>
<p>Input DL2 files:</p><ul>{inputs}</ul>
<p>Metrics per true-energy bin; gammas are true_shower_primary_id == {GAMMA_ID}, every other
primary is background. Energy bias = median (E_reco − E_true)/E_true, resolution = half the
16–84 % width of that relative error; angular resolution = 68 % containment of the distance to
the true direction. Bins with fewer than {self.min_events} events are left empty.
{"Each property is compared on the events every reconstructor of that property reconstructed."
 if self.common_events else "Each reconstructor is evaluated on its own valid events."}</p>
<h2>Summary (all energies)</h2>
<p>Table: <a href="summary.ecsv">summary.ecsv</a></p>
{_format_for_html(summary)}
{comparison_html}
{"".join(sections)}
{images_section}
</body></html>
"""
        (output_dir / "report.html").write_text(page, encoding="utf-8")


def _migration_table(prefix, true_energy, reco_energy, edges):
    """The energy migration matrix of ``prefix`` (energies in TeV) as rows of a table."""
    counts, fractions = energy_migration(true_energy * u.TeV, reco_energy * u.TeV, edges, edges)
    true_bin, reco_bin = (index.ravel() for index in np.indices(counts.shape))
    return QTable({
        "reconstructor": [prefix] * counts.size,
        "true_low": edges[:-1][true_bin], "true_high": edges[1:][true_bin],
        "reco_low": edges[:-1][reco_bin], "reco_high": edges[1:][reco_bin],
        "n_events": counts.ravel(), "fraction": fractions.ravel(),
    })


def _prediction_lines(row, sample_prefixes):
    """Short text of the predictions in ``row`` for the prefixes of each property."""
    lines = []
    for property_name, prefixes in sample_prefixes.items():
        for prefix in prefixes:
            if not bool(np.ma.filled(row[f"{prefix}_is_valid"], False)):
                lines.append((prefix, property_name, np.nan, f"{prefix}: invalid"))
                continue
            if property_name == "energy":
                value = u.Quantity(row[f"{prefix}_energy"]).to_value(u.TeV)
                text = f"{prefix}: E = {value:.3g} TeV"
            elif property_name == "particle_type":
                value = float(row[f"{prefix}_prediction"])
                text = f"{prefix}: gammaness = {value:.3f}"
            else:
                value = float(angular_separation_deg(
                    row["true_alt"], row["true_az"], row[f"{prefix}_alt"], row[f"{prefix}_az"]
                ))
                text = f"{prefix}: Δθ = {value:.3f} deg"
            lines.append((prefix, property_name, value, text))
    return lines


def _camera_positions(row, geometry_prefixes):
    """What the camera image figure marks, in the image's ``TelescopeFrame`` (deg): the true
    source, the valid reconstructed directions and the Hillas ellipse (where the row has them)."""
    from astropy.coordinates import AltAz, SkyCoord
    from ctapipe.coordinates import TelescopeFrame

    if "telescope_pointing_altitude" not in row.colnames:
        return {}
    pointing = SkyCoord(alt=row["telescope_pointing_altitude"],
                        az=row["telescope_pointing_azimuth"], frame=AltAz())
    frame = TelescopeFrame(telescope_pointing=pointing)

    def position(alt, az):
        offset = SkyCoord(alt=alt, az=az, frame=AltAz()).transform_to(frame)
        return float(offset.fov_lon.to_value(u.deg)), float(offset.fov_lat.to_value(u.deg))

    sources = [(prefix, *position(row[f"{prefix}_alt"], row[f"{prefix}_az"]))
               for prefix in geometry_prefixes
               if bool(np.ma.filled(row[f"{prefix}_is_valid"], False))]
    result = {"true_source": position(row["true_alt"], row["true_az"]), "sources": sources}
    names = ("fov_lon", "fov_lat", "length", "width", "psi")
    if all(f"hillas_{name}" in row.colnames for name in names):
        hillas = {name: float(u.Quantity(row[f"hillas_{name}"]).to_value(u.deg)) for name in names}
        if all(np.isfinite(list(hillas.values()))):
            result["hillas"] = hillas
    return result


def _select_camera_images(paths, samples, n_images, n_scan=200):
    """The brightest images of gammas and of background among the first ``n_scan`` events."""
    candidates = []
    for path in paths:
        with tables.open_file(path) as h5file:
            if DL1_TEL_IMAGES_GROUP not in h5file:
                continue
        with TableLoader(input_url=path, dl1_images=True, dl1_parameters=True,
                         true_parameters=False, pointing=True, dl2=True,
                         simulated=True) as loader:
            n_stop = min(n_scan, len(loader))
            by_type = loader.read_telescope_events_by_type(start=0, stop=n_stop)
            for tel_type, table in by_type.items():
                if "image" not in table.colnames or len(table) == 0:
                    continue
                table = QTable(table)  # rows then hold Quantities, not bare numbers
                prefixes = {}
                for level in ("subarray", str(tel_type)):
                    if level in samples:
                        for prop, names in samples[level].reconstructors.items():
                            prefixes.setdefault(prop, []).extend(
                                n for n in names if f"{n}_is_valid" in table.colnames)
                charge = np.nansum(np.asarray(table["image"], dtype=float), axis=1)
                for index in np.argsort(charge)[::-1][:n_images]:
                    row = table[index]
                    candidates.append({
                        "charge": charge[index],
                        "is_gamma": int(row["true_shower_primary_id"]) == GAMMA_ID,
                        "row": row, "prefixes": prefixes, "tel_type": str(tel_type),
                        "geometry": loader.subarray.tel[int(row["tel_id"])].camera.geometry,
                    })
    # half gammas, half background where both exist, brightest first
    gammas = sorted((c for c in candidates if c["is_gamma"]), key=lambda c: -c["charge"])
    others = sorted((c for c in candidates if not c["is_gamma"]), key=lambda c: -c["charge"])
    n_gamma = min(len(gammas), max(n_images - len(others), (n_images + 1) // 2))
    chosen = gammas[:n_gamma] + others[: n_images - n_gamma]

    images, rows = [], []
    for entry in chosen:
        row = entry["row"]
        true_energy = u.Quantity(row["true_energy"]).to_value(u.TeV)
        particle = "gamma" if entry["is_gamma"] else f"primary {int(row['true_shower_primary_id'])}"
        predictions = _prediction_lines(row, entry["prefixes"])
        images.append({
            "geometry": entry["geometry"],
            "image": np.nan_to_num(np.asarray(row["image"], dtype=float)),
            "title": (f"{particle}, E_true = {true_energy:.3g} TeV\nobs {row['obs_id']} event "
                      f"{row['event_id']} tel {row['tel_id']} ({entry['tel_type']})"),
            "lines": [text for *_, text in predictions],
            **_camera_positions(row, entry["prefixes"].get("geometry", [])),
        })
        for prefix, property_name, value, _ in predictions:
            rows.append({
                "obs_id": int(row["obs_id"]), "event_id": int(row["event_id"]),
                "tel_id": int(row["tel_id"]), "telescope_type": entry["tel_type"],
                "true_shower_primary_id": int(row["true_shower_primary_id"]),
                "true_energy": true_energy * u.TeV, "image_charge": entry["charge"],
                "reconstructor": prefix, "property": property_name, "value": value,
            })
    return images, rows
