"""The report's metric tables: every reconstructor of one level, per true-energy bin.

For each reconstructed property, the metrics of ``metrics.py``: AUC, ROC curves and gammaness
histograms (particle type, gammas vs everything else), energy bias and resolution, the energy
migration matrix and the 68 % angular resolution (gammas only); the summary over all energies
and the comparison of each reconstructor with its property's reference, bin by bin, with the
bootstrap error of each difference and a verdict that says whether it exceeds twice that error.
"""
import logging
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.table import QTable, vstack

from .dl2 import EventSample, is_reference
from .metrics import (
    angular_resolution,
    angular_separation_deg,
    binned,
    bootstrap_difference_error,
    energy_bias_resolution,
    energy_migration,
    roc_auc,
    roc_curve,
    significance_verdict,
)

__all__ = ["MetricTables", "migration_table"]

log = logging.getLogger(__name__)

def _resolution(true_energy, reco_energy):
    return energy_bias_resolution(true_energy, reco_energy)[1]


#: property -> (table name, metric column compared with the reference, lower is better, the
#: metric as a function of the per-event arrays)
COMPARED = {
    "particle_type": ("auc", "auc", False, roc_auc),
    "energy": ("energy", "resolution", True, _resolution),
    "geometry": ("angular", "angular_resolution", True, angular_resolution),
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


def _label(table, prefix):
    table.add_column(prefix, name="reconstructor", index=0)
    return table


def migration_table(prefix, true_energy, reco_energy, edges):
    """The energy migration matrix of ``prefix`` (energies in TeV) as rows of a table."""
    counts, fractions = energy_migration(true_energy * u.TeV, reco_energy * u.TeV, edges, edges)
    true_bin, reco_bin = (index.ravel() for index in np.indices(counts.shape))
    return QTable({
        "reconstructor": [prefix] * counts.size,
        "true_low": edges[:-1][true_bin], "true_high": edges[1:][true_bin],
        "reco_low": edges[:-1][reco_bin], "reco_high": edges[1:][reco_bin],
        "n_events": counts.ravel(), "fraction": fractions.ravel(),
    })


@dataclass(frozen=True)
class MetricTables:
    """The metric tables of one level of simulated DL2 events (the report's settings)."""

    energy_bins: u.Quantity
    min_events: int
    common_events: bool = True
    reference_prefixes: tuple = ()
    n_gammaness_bins: int = 40
    max_roc_points: int = 300
    n_bootstrap: int = 200

    def is_reference(self, prefix):
        return is_reference(prefix, self.reference_prefixes)

    def references(self, sample):
        """The reference prefixes among the reconstructors of ``sample``."""
        return {p for ps in sample.reconstructors.values() for p in ps if self.is_reference(p)}

    def selections(self, sample, property_name):
        """Per prefix: own valid events, and the events its metrics use."""
        prefixes = sample.reconstructors.get(property_name, [])
        valid = {prefix: sample.valid(prefix, property_name) for prefix in prefixes}
        if self.common_events and valid:
            common = np.logical_and.reduce(list(valid.values()))
            return valid, {prefix: common for prefix in prefixes}
        return valid, valid

    def __call__(self, sample: EventSample):
        """Per-bin and overall metric tables of one level, as a dict of QTables (``summary``
        always, ``comparison`` where a property has a reference)."""
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

        # per (property, prefix): true energy and metric arrays of the events used, for the
        # bootstrap errors of the comparison
        events = {}
        valid, used = self.selections(sample, "particle_type")
        auc_tables, roc_tables, histograms = [], [], []
        # gamma/hadron separation needs both (gammas only: no AUC rather than a NaN)
        classifiers = sample.reconstructors.get("particle_type", []) if not np.all(is_gamma) else []
        for prefix in classifiers:
            mask = used[prefix]
            labels = is_gamma[mask]
            scores = sample.values(f"{prefix}_prediction", mask)
            events["particle_type", prefix] = (mask, true_energy[mask], (labels, scores))
            table = binned(_auc_and_counts, true_energy[mask], edges, labels, scores,
                           min_events=self.min_events, names=["auc", "n_gamma", "n_background"])
            auc_tables.append(_label(table, prefix))
            roc_tables += self._roc_tables(prefix, table, true_energy[mask], labels, scores)
            histograms.append(self._gammaness_histogram(prefix, labels, scores))
            summary_row("particle_type", prefix, len(sample.table), valid[prefix], mask, "auc",
                        roc_auc(labels, scores))
        if auc_tables:
            results["auc"] = vstack(auc_tables)
            results["roc"] = vstack(roc_tables) if roc_tables else None
            results["gammaness"] = vstack(histograms)

        for property_name, name, metric_fn, arrays_fn, columns in GAMMA_METRICS:
            valid, used = self.selections(sample, property_name)
            per_prefix = []
            for prefix in sample.reconstructors.get(property_name, []):
                mask = used[prefix] & is_gamma
                arrays = arrays_fn(sample, prefix, mask)
                events[property_name, prefix] = (mask, true_energy[mask], arrays)
                table = binned(metric_fn, true_energy[mask], edges, *arrays,
                               min_events=self.min_events, names=columns)
                per_prefix.append(_label(table, prefix))
                for column, value in zip(columns, np.atleast_1d(metric_fn(*arrays))):
                    summary_row(property_name, prefix, np.count_nonzero(is_gamma),
                                valid[prefix] & is_gamma, mask, column, value)
            if per_prefix:
                results[name] = vstack(per_prefix)
        if "angular" in results:
            results["angular"]["angular_resolution"] *= u.deg
        _, used = self.selections(sample, "energy")
        migrations = [migration_table(prefix, *_energy_arrays(sample, prefix, used[prefix] & is_gamma),
                                      edges)
                      for prefix in sample.reconstructors.get("energy", [])]
        if migrations:
            results["energy_migration"] = vstack(migrations)

        results = {k: v for k, v in results.items() if v is not None}
        results["summary"] = QTable(rows=summary_rows)
        comparison = self._compare(sample, results, events)
        if comparison is not None:
            results["comparison"] = comparison
        return results

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

    def _compare(self, sample, results, events):
        """Side by side per energy bin: each reconstructor vs its property's reference, the
        bootstrap error of the difference (`bootstrap_difference_error`, paired where both use
        the same events) and the verdict (`significance_verdict`)."""
        rows = []
        for property_name, (name, column, lower_is_better, metric_fn) in COMPARED.items():
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
                ours_mask, ours_energy, ours_arrays = events[property_name, prefix]
                ref_mask, ref_energy, ref_arrays = events[property_name, references[0]]
                paired = np.array_equal(ours_mask, ref_mask)
                for row, ref_row in zip(ours, reference):
                    value = u.Quantity(row[column]).value
                    ref_value = u.Quantity(ref_row[column]).value
                    difference = value - ref_value
                    error = np.nan
                    if np.isfinite(difference):
                        low, high = u.Quantity(row["low"]), u.Quantity(row["high"])
                        in_ours = (ours_energy >= low) & (ours_energy < high)
                        in_ref = (ref_energy >= low) & (ref_energy < high)
                        error = bootstrap_difference_error(
                            metric_fn, tuple(a[in_ours] for a in ours_arrays),
                            tuple(a[in_ref] for a in ref_arrays), paired, self.n_bootstrap,
                            seed=len(rows),
                        )
                    gain = -difference if lower_is_better else difference
                    rows.append({
                        "level": sample.name, "property": property_name, "metric": column,
                        "reconstructor": prefix, "reference": references[0],
                        "low": row["low"], "high": row["high"], "n_events": row["n_events"],
                        "value": value, "reference_value": ref_value,
                        "difference": difference, "difference_error": error,
                        "ratio": value / ref_value if ref_value != 0 else np.nan,
                        "better": bool(gain > 0), "verdict": significance_verdict(gain, error),
                    })
        return QTable(rows=rows) if rows else None
