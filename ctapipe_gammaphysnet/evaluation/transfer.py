"""The transfer check: do reconstructors trained on simulated images work on real ones?

Real images (DL2 files of real sim_telarray simulations: sim_telarray's camera model, ctapipe's
calibration and image extraction) are compared, image by image, with simulated test images of
the same energy and intensity, the expectation. Per real image, its ``n_neighbours`` nearest
simulated images of the same particle in (log10 E_true, log10 intensity), both in decades, are its
matched sample; the metrics of a set of real images are compared with the same metrics on their
pooled matched samples. What is compared are the telescope-level results (``<prefix>_tel_*``):
one prediction per image.

- energy: median |log10(E_reco / E_true)| (gammas);
- direction: 68 % containment of the angular error (gammas);
- particle type: the fraction of images on the wrong side of ``gammaness_threshold`` (gammas
  below it, protons above), and the median gammaness.

The transfer ratio is real / expected error (energy, direction); the verdict says in words
whether a reconstructor transfers (ratio up to ``max_transfer_ratio``, or a misclassified
fraction at most ``max_misclassified_increase`` above the expectation). Each real metric has its
bootstrap error (the real images resampled), which with a few dozen real images is often as
large as the differences between reconstructors. With ``reference_prefixes``, each reconstructor
is also compared head to head with its property's reference on the same real images: the
difference of the metrics, its paired bootstrap error and a verdict.
"""
import ast
import logging
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import QTable, vstack
from ctapipe.core import Component
from ctapipe.core.traits import Float, Int, List, Unicode
from matplotlib import rcParams
from matplotlib.figure import Figure
from scipy.spatial import cKDTree

from ..constants import GAMMA_ID, PROTON_ID
from ..selection import GammaPhysNetImageSelection
from .dl2 import EventSample, is_reference, read_dl2_events
from .metrics import (
    angular_separation_deg,
    bootstrap_difference_error,
    bootstrap_error,
    containment_68,
    significance_verdict,
)

__all__ = ["TransferError", "TransferCheck", "TransferResult", "INTENSITY", "plot_transfer",
           "check_transfer_dir", "add_transfer_section"]

log = logging.getLogger(__name__)

#: the image intensity column (p.e.) the images are matched and banded by
INTENSITY = "hillas_intensity"
PARTICLES = {GAMMA_ID: "gamma", PROTON_ID: "proton"}
#: property -> (per-image column suffix, the metric's name and unit)
ERROR_METRICS = {
    "energy": ("energy_ratio", "median |log10(E_reco/E_true)|"),
    "geometry": ("angular_error", "68 % angular error / deg"),
    "particle_type": ("gammaness", "misclassified fraction"),
}


class TransferError(ValueError):
    """The inputs of the transfer check cannot be compared; the message names file and problem."""


def _median_abs_log(ratio):
    return float(np.median(np.abs(np.log10(ratio)))) if len(ratio) else np.nan


def _misclassified(gammaness, particle, threshold):
    if len(gammaness) == 0:
        return np.nan
    wrong = gammaness < threshold if particle == "gamma" else gammaness >= threshold
    return float(np.mean(wrong))


def _particles(prop):
    """The particles whose images a property is judged on."""
    return ["gamma", "proton"] if prop == "particle_type" else ["gamma"]


def _matched_rows(images, neighbours, particle, low, high):
    """Rows of the real images of ``particle`` with ``low <= intensity < high`` that have
    matched simulated images."""
    primary_id = next(i for i, p in PARTICLES.items() if p == particle)
    intensity = np.asarray(images[INTENSITY])
    in_band = ((np.asarray(images["true_shower_primary_id"]) == primary_id)
               & (intensity >= low) & (intensity < high))
    return [r for r in np.flatnonzero(in_band) if r in neighbours]


class TransferResult:
    """The transfer check's tables: ``images`` (one row per real image), ``summary`` (per
    reconstructor, particle and intensity band), ``verdicts`` (one per reconstructor),
    ``comparison`` (each reconstructor against its reference on the real images, None without a
    reference) and ``proton_gammaness`` (histograms of the real protons' gammaness and of their
    expectation)."""

    def __init__(self, images, summary, verdicts, comparison, proton_gammaness, reconstructors):
        self.images = images
        self.summary = summary
        self.verdicts = verdicts
        self.comparison = comparison
        self.proton_gammaness = proton_gammaness
        #: property -> prefixes compared
        self.reconstructors = reconstructors


class TransferCheck(Component):
    """Telescope-level results on real images next to those on matched simulated images."""

    intensity_bands = List(
        Float(), default_value=[50.0, 200.0, 1000.0, np.inf], minlen=2,
        help="edges (p.e.) of the intensity bands the metrics are summarised in; .inf for open",
    ).tag(config=True)
    n_neighbours = Int(
        50, min=1,
        help="simulated images of the same particle matched to each real image (nearest in"
             " log10 true energy and log10 intensity)",
    ).tag(config=True)
    max_matching_distance = Float(
        0.3, min=0,
        help="median distance (decades) of a real image to its matched simulated images above"
             " which a warning says the simulated sample does not cover it",
    ).tag(config=True)
    gammaness_threshold = Float(
        0.5, help="gammaness separating images classified as gamma from the others",
    ).tag(config=True)
    max_transfer_ratio = Float(
        1.5, min=1,
        help="real / expected error (energy, direction) up to which a reconstructor transfers",
    ).tag(config=True)
    max_misclassified_increase = Float(
        0.1, min=0,
        help="misclassified fraction above the expectation up to which a classifier transfers",
    ).tag(config=True)
    telescope_size_type = Unicode(
        "LST", help="size type of the telescopes compared (the first part of their type name)",
    ).tag(config=True)
    n_gammaness_bins = Int(10, min=2, help="bins of the proton gammaness histograms").tag(
        config=True)
    n_bootstrap = Int(
        200, min=20, help="bootstrap resamples of the real images for the errors of their metrics",
    ).tag(config=True)
    reference_prefixes = List(
        Unicode(), default_value=[],
        help="prefixes of the reference reconstructors (e.g. ctapipe's RandomForest models),"
             " which every other reconstructor of their property is compared with on the same"
             " real images",
    ).tag(config=True)

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        edges = np.asarray(self.intensity_bands, dtype=float)
        if np.any(np.diff(edges) <= 0) or edges[0] <= 0:
            raise ValueError(f"intensity_bands must be positive and increasing, got {edges}")
        self.selection = GammaPhysNetImageSelection(parent=self)

    # ------------------------------------------------------------------ reading
    def _columns_needed(self):
        names = {INTENSITY}
        for _, expression in self.selection.quality_criteria:
            names |= {node.id for node in ast.walk(ast.parse(expression, mode="eval"))
                      if isinstance(node, ast.Name)}
        return sorted(names - {"np", "u"})

    def _read(self, paths, role):
        """The telescope events of the compared size type, with their reconstructors."""
        try:
            samples = read_dl2_events(paths, parameters=self._columns_needed())
        except ValueError as error:  # not DL2, no simulation truth, no reconstructor
            raise TransferError(f"{role} DL2: {error}") from None
        names = ", ".join(str(p) for p in paths)
        chosen = [s for name, s in samples.items()
                  if name != "subarray" and name.split("_")[0] == self.telescope_size_type]
        if not chosen:
            raise TransferError(
                f"{role} DL2 {names}: no telescope-level results (<prefix>_tel_*) of"
                f" {self.telescope_size_type} telescopes; found levels {sorted(samples)}")
        reconstructors = {}
        for sample in chosen:
            for prop, prefixes in sample.reconstructors.items():
                reconstructors.setdefault(prop, set()).update(prefixes)
        common = {prop: sorted(p for p in prefixes
                               if all(p in s.reconstructors.get(prop, []) for s in chosen))
                  for prop, prefixes in reconstructors.items()}
        common = {prop: prefixes for prop, prefixes in common.items() if prefixes}
        if not common:
            raise TransferError(f"{role} DL2 {names}: no reconstructor common to the telescope"
                                f" types {[s.name for s in chosen]}")
        for sample in chosen:
            sample.table["telescope_type"] = np.full(len(sample.table), sample.name)
        missing = [c for c in self._columns_needed() if c not in chosen[0].table.colnames]
        if missing:
            raise TransferError(f"{role} DL2 {names}: DL1 image parameters {missing} missing"
                                " (write the files with DataWriter.write_dl1_parameters)")
        keep = [c for c in chosen[0].table.colnames if c in set.intersection(
            *(set(s.table.colnames) for s in chosen))]
        table = vstack([s.table[keep] for s in chosen], metadata_conflicts="silent")
        return table, common

    def _selected(self, table, reconstructors, role, paths):
        """Images passing the selection, valid and finite for every compared reconstructor."""
        sample = EventSample(role, table, reconstructors)
        mask = self.selection.table_mask(table) if len(table) else np.zeros(0, bool)
        mask &= np.isin(np.asarray(table["true_shower_primary_id"]), list(PARTICLES))
        for prop, prefixes in reconstructors.items():
            for prefix in prefixes:
                mask &= sample.valid(prefix, prop)
        if not np.any(mask):
            raise TransferError(
                f"{role} DL2 {', '.join(str(p) for p in paths)}: no gamma or proton image passes"
                f" the cuts {self.selection.quality_criteria} with a valid result of every"
                f" reconstructor {reconstructors}")
        return sample, mask

    # ------------------------------------------------------------------ per image
    @staticmethod
    def _values(sample, reconstructors):
        """Per-image result of each reconstructor: E_reco/E_true, angular error, gammaness."""
        everything = slice(None)
        values = {}
        true_energy = sample.values("true_energy", everything, u.TeV)
        for prefix in reconstructors.get("energy", []):
            values[f"{prefix}_energy_ratio"] = (
                sample.values(f"{prefix}_energy", everything, u.TeV) / true_energy)
        for prefix in reconstructors.get("geometry", []):
            columns = [sample.values(c, everything, u.deg) for c in
                       ("true_alt", "true_az", f"{prefix}_alt", f"{prefix}_az")]
            finite = np.logical_and.reduce([np.isfinite(c) for c in columns])
            error = np.full(len(true_energy), np.nan)
            error[finite] = angular_separation_deg(*(c[finite] for c in columns))
            values[f"{prefix}_angular_error"] = error
        for prefix in reconstructors.get("particle_type", []):
            values[f"{prefix}_gammaness"] = sample.values(f"{prefix}_prediction", everything)
        return values

    def _metric(self, prop, values, particle):
        if prop == "energy":
            return _median_abs_log(values)
        if prop == "geometry":
            return containment_68(values)
        return _misclassified(values, particle, self.gammaness_threshold)

    @staticmethod
    def _coordinates(table):
        energy = u.Quantity(table["true_energy"]).to_value(u.TeV)
        intensity = np.asarray(table[INTENSITY], dtype=float)
        return np.column_stack([np.log10(energy), np.log10(np.maximum(intensity, 1e-3))])

    def _band_names(self):
        edges = self.intensity_bands
        return [f">{low:g}" if not np.isfinite(high) else f"{low:g}-{high:g}"
                for low, high in zip(edges[:-1], edges[1:])]

    def __call__(self, real_paths, simulated_paths):
        """Compare the reconstructors of ``real_paths`` on their images with ``simulated_paths``.

        Returns a `TransferResult`; raises `TransferError` for inputs that cannot be compared.
        """
        real_paths = [Path(p) for p in real_paths]
        simulated_paths = [Path(p) for p in simulated_paths]
        real, real_reco = self._read(real_paths, "real")
        simulated, simulated_reco = self._read(simulated_paths, "simulated")
        reconstructors = {prop: [p for p in prefixes if p in simulated_reco.get(prop, [])]
                          for prop, prefixes in real_reco.items()}
        for prop, prefixes in real_reco.items():
            for prefix in sorted(set(prefixes) - set(reconstructors[prop])):
                log.warning("%s (%s) is not in the simulated files: no expectation, skipped",
                            prefix, prop)
        reconstructors = {prop: prefixes for prop, prefixes in reconstructors.items() if prefixes}
        if not reconstructors:
            raise TransferError(
                f"no reconstructor in both the real ({sorted(real_reco.items())}) and the"
                f" simulated DL2 files ({sorted(simulated_reco.items())})")
        real_sample, real_mask = self._selected(real, reconstructors, "real", real_paths)
        sim_sample, sim_mask = self._selected(simulated, reconstructors, "simulated",
                                              simulated_paths)
        real_values = self._values(real_sample, reconstructors)
        sim_values = self._values(sim_sample, reconstructors)

        images = self._image_table(real, real_mask, real_values)
        images.add_column([real_paths[i].name for i in images["file_index"]],
                          name="file", index=0)
        neighbours = self._match(real, real_mask, simulated, sim_mask, images)
        for name, values in sim_values.items():
            prop = next(p for p, (suffix, _) in ERROR_METRICS.items() if name.endswith(suffix))
            expected = np.full(len(images), np.nan)
            for row, index in neighbours.items():
                particle = PARTICLES[int(images["true_shower_primary_id"][row])]
                if prop == "particle_type":
                    expected[row] = np.median(values[index])
                else:
                    expected[row] = self._metric(prop, values[index], particle)
            expected_name = {
                "energy": name.replace("_energy_ratio", "_expected_abs_log_ratio"),
                "geometry": name.replace("_angular_error", "_expected_angular_error_68"),
                "particle_type": name.replace("_gammaness", "_expected_gammaness"),
            }[prop]
            images[expected_name] = expected
        summary = self._summary(images, neighbours, real_values, sim_values, reconstructors)
        verdicts = self._verdicts(summary, reconstructors)
        comparison = self._comparison(images, neighbours, real_values, reconstructors)
        histograms = self._proton_histograms(images, neighbours, real_values, sim_values,
                                             reconstructors)
        return TransferResult(images, summary, verdicts, comparison, histograms, reconstructors)

    def _image_table(self, real, mask, values):
        images = QTable({
            "file_index": real["file_index"], "obs_id": real["obs_id"],
            "event_id": real["event_id"], "tel_id": real["tel_id"],
            "telescope_type": real["telescope_type"],
            "true_shower_primary_id": real["true_shower_primary_id"],
            "true_energy": u.Quantity(real["true_energy"]).to(u.TeV),
            INTENSITY: np.asarray(real[INTENSITY], dtype=float),
        })
        band = np.digitize(images[INTENSITY], self.intensity_bands) - 1
        names = self._band_names()
        images["intensity_band"] = [names[b] if 0 <= b < len(names) else "" for b in band]
        images["selected"] = mask
        for name, column in values.items():
            images[name] = column * (u.deg if name.endswith("_angular_error") else 1)
        return images

    def _match(self, real, real_mask, simulated, sim_mask, images):
        """Row of each selected real image -> indices of its matched simulated images."""
        real_xy = self._coordinates(real)
        sim_xy = self._coordinates(simulated)
        real_id = np.asarray(real["true_shower_primary_id"])
        sim_id = np.asarray(simulated["true_shower_primary_id"])
        neighbours = {}
        distance = np.full(len(real), np.nan)
        n_matched = np.zeros(len(real), dtype=int)
        for primary_id, particle in PARTICLES.items():
            rows = np.flatnonzero(real_mask & (real_id == primary_id))
            candidates = np.flatnonzero(sim_mask & (sim_id == primary_id))
            if len(rows) == 0:
                continue
            if len(candidates) == 0:
                log.warning("no simulated %s image passes the cuts: %d real %s images have no"
                            " expectation", particle, len(rows), particle)
                continue
            k = min(self.n_neighbours, len(candidates))
            if k < self.n_neighbours:
                log.warning("only %d simulated %s images to match (n_neighbours = %d)", k,
                            particle, self.n_neighbours)
            dist, index = cKDTree(sim_xy[candidates]).query(real_xy[rows], k=k)
            dist, index = dist.reshape(len(rows), k), index.reshape(len(rows), k)
            for row, found, d in zip(rows, index, dist):
                neighbours[row] = candidates[found]
                distance[row] = np.median(d)
                n_matched[row] = k
        images["n_matched"] = n_matched
        images["matching_distance"] = distance
        far = np.count_nonzero(distance > self.max_matching_distance)
        if far:
            log.warning("%d real image(s) are more than %.2f decades (median, in true energy and"
                        " intensity) from their matched simulated images: the simulated sample"
                        " does not cover them well", far, self.max_matching_distance)
        return neighbours

    # ------------------------------------------------------------------ summaries
    def _summary(self, images, neighbours, real_values, sim_values, reconstructors):
        edges = list(self.intensity_bands)
        bands = list(zip(self._band_names(), edges[:-1], edges[1:]))
        bands.append(("all", edges[0], edges[-1]))
        rows = []
        for prop, prefixes in reconstructors.items():
            suffix, metric = ERROR_METRICS[prop]
            for prefix in prefixes:
                name = f"{prefix}_{suffix}"
                for particle in _particles(prop):
                    for band, low, high in bands:
                        used = _matched_rows(images, neighbours, particle, low, high)
                        real = real_values[name][used]
                        pooled = (np.concatenate([neighbours[r] for r in used]) if used
                                  else np.zeros(0, dtype=int))
                        expected = sim_values[name][pooled]
                        row = {
                            "reconstructor": prefix, "property": prop, "particle": particle,
                            "intensity_band": band, "intensity_low": low, "intensity_high": high,
                            "n_images": len(used), "metric": metric,
                            "real": self._metric(prop, real, particle),
                            "real_error": bootstrap_error(
                                lambda values: self._metric(prop, values, particle), (real,),
                                self.n_bootstrap, seed=len(rows)),
                            "expected": self._metric(prop, expected, particle),
                        }
                        is_gammaness = prop == "particle_type"
                        row["median_gammaness"] = (float(np.median(real))
                                                   if is_gammaness and len(real) else np.nan)
                        row["expected_median_gammaness"] = (
                            float(np.median(expected)) if is_gammaness and len(expected)
                            else np.nan)
                        rows.append(row)
        summary = QTable(rows=rows)
        ratio = np.full(len(summary), np.nan)
        difference = np.full(len(summary), np.nan)
        is_error = summary["property"] != "particle_type"
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio[is_error] = (summary["real"] / summary["expected"])[is_error]
        difference[~is_error] = (summary["real"] - summary["expected"])[~is_error]
        summary["transfer_ratio"] = ratio
        # the expectation pools many simulated images: the real images' error dominates
        with np.errstate(divide="ignore", invalid="ignore"):
            summary["transfer_ratio_error"] = ratio * summary["real_error"] / summary["real"]
        summary["difference"] = difference
        return summary

    def _verdict(self, row):
        n = int(row["n_images"])
        if n == 0:
            return "no real images"
        if not np.isfinite(row["expected"]):
            return "no simulated expectation"
        few = f" (only {n} image{'s' if n > 1 else ''})" if n < 10 else ""
        if row["property"] == "particle_type":
            excess = row["difference"]
            if excess <= self.max_misclassified_increase:
                return "transfers" + few
            return (f"misclassifies {row['real']:.0%} of real {row['particle']}s"
                    f" ({row['expected']:.0%} expected){few}")
        ratio = row["transfer_ratio"]
        if not np.isfinite(ratio):
            return "no expectation (zero error on simulated images)"
        if ratio <= self.max_transfer_ratio:
            return f"transfers (×{ratio:.2f}){few}"
        return f"degrades ×{ratio:.1f} on real images{few}"

    def _verdicts(self, summary, reconstructors):
        overall = summary[summary["intensity_band"] == "all"]
        rows = []
        for row in overall:
            rows.append({
                "reconstructor": row["reconstructor"], "property": row["property"],
                "particle": row["particle"], "metric": row["metric"],
                "n_images": row["n_images"], "real": row["real"], "real_error": row["real_error"],
                "expected": row["expected"], "transfer_ratio": row["transfer_ratio"],
                "transfer_ratio_error": row["transfer_ratio_error"], "difference": row["difference"],
                "verdict": self._verdict(row),
            })
        return QTable(rows=rows)

    def _comparison(self, images, neighbours, real_values, reconstructors):
        """Each reconstructor against its property's reference on the same real images (all
        intensities): both metrics, the difference, its paired bootstrap error and the verdict
        (`significance_verdict`; every metric here is an error: lower is better)."""
        low, high = self.intensity_bands[0], self.intensity_bands[-1]
        rows = []
        for prop, prefixes in reconstructors.items():
            references = [p for p in prefixes if is_reference(p, self.reference_prefixes)]
            if not references:
                continue
            suffix, metric = ERROR_METRICS[prop]
            reference = references[0]
            for prefix in (p for p in prefixes if p not in references):
                for particle in _particles(prop):
                    used = _matched_rows(images, neighbours, particle, low, high)
                    ours = real_values[f"{prefix}_{suffix}"][used]
                    theirs = real_values[f"{reference}_{suffix}"][used]

                    def metric_fn(values, prop=prop, particle=particle):
                        return self._metric(prop, values, particle)

                    real, reference_real = metric_fn(ours), metric_fn(theirs)
                    error = bootstrap_difference_error(metric_fn, (ours,), (theirs,), paired=True,
                                                       n_resamples=self.n_bootstrap, seed=len(rows))
                    difference = real - reference_real
                    rows.append({
                        "reconstructor": prefix, "reference": reference, "property": prop,
                        "particle": particle, "metric": metric, "n_images": len(used),
                        "real": real, "reference_real": reference_real,
                        "difference": difference, "difference_error": error,
                        "verdict": significance_verdict(-difference, error),
                    })
        return QTable(rows=rows) if rows else None

    def _proton_histograms(self, images, neighbours, real_values, sim_values, reconstructors):
        edges = np.linspace(0, 1, self.n_gammaness_bins + 1)
        protons = [r for r in np.flatnonzero(images["true_shower_primary_id"] == PROTON_ID)
                   if r in neighbours]
        pooled = (np.concatenate([neighbours[r] for r in protons]) if protons
                  else np.zeros(0, dtype=int))
        tables = []
        for prefix in reconstructors.get("particle_type", []):
            name = f"{prefix}_gammaness"
            expected = np.histogram(np.clip(sim_values[name][pooled], 0, 1), edges)[0]
            tables.append(QTable({
                "reconstructor": [prefix] * (len(edges) - 1), "low": edges[:-1],
                "high": edges[1:],
                "n_real": np.histogram(np.clip(real_values[name][protons], 0, 1), edges)[0],
                # the pooled matched sample, scaled to the number of real protons
                "n_expected": expected / max(len(pooled), 1) * len(protons),
            }))
        return vstack(tables) if tables else None


# ---------------------------------------------------------------------- figure
def plot_transfer(result):
    """The transfer check (a `TransferResult`): each real image's result vs its intensity,
    filled markers, next to the expectation of its matched simulated images, open markers; and
    the gammaness of the real protons."""
    images = result.images[result.images["selected"]]
    gammas = images[images["true_shower_primary_id"] == GAMMA_ID]
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    panels = (
        ("energy", "energy_ratio", None, "E_reco / E_true (real gammas)", True),
        ("geometry", "angular_error", "expected_angular_error_68",
         "angular error / deg (open: expected 68 %)", True),
        ("particle_type", "gammaness", "expected_gammaness",
         "gammaness of real gammas (open: expected median)", False),
    )
    fig = Figure(figsize=(11, 8.5))
    axes = fig.subplots(2, 2)
    intensity = np.asarray(gammas[INTENSITY])
    for ax, (prop, column, expected, ylabel, log_y) in zip(axes.flat, panels):
        for i, prefix in enumerate(result.reconstructors.get(prop, [])):
            color = colors[i % len(colors)]
            ax.plot(intensity, u.Quantity(gammas[f"{prefix}_{column}"]).value, "o",
                    color=color, label=prefix)
            if expected is not None:
                ax.plot(intensity, u.Quantity(gammas[f"{prefix}_{expected}"]).value, "o",
                        color=color, markerfacecolor="none")
        if prop == "energy":
            ax.axhline(1, color="gray", linewidth=0.8)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("image intensity / p.e.")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    ax = axes[1, 1]
    histograms = result.proton_gammaness
    if histograms is not None:
        for i, name in enumerate(dict.fromkeys(histograms["reconstructor"])):
            rows = histograms[histograms["reconstructor"] == name]
            edges = np.append(rows["low"], rows["high"][-1])
            color = colors[i % len(colors)]
            ax.stairs(np.asarray(rows["n_real"], dtype=float), edges, color=color, label=name)
            ax.stairs(np.asarray(rows["n_expected"], dtype=float), edges, color=color,
                      linestyle="--")
        ax.legend(fontsize="small")
    ax.set_xlabel("gammaness")
    ax.set_ylabel("real protons (dashed: expected)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- in the report
#: the outputs of the transfer check that the performance report shows
REPORTED_FILES = ("verdicts.ecsv", "summary.ecsv", "images.ecsv", "transfer.png")


def check_transfer_dir(path):
    """Raise a `TransferError` unless ``path`` holds a transfer check's outputs."""
    missing = [name for name in REPORTED_FILES if not (Path(path) / name).is_file()]
    if missing:
        raise TransferError(f"{path}: not the output of ctapipe-check-transfer-gammaphysnet"
                            f" ({', '.join(missing)} missing)")


def add_transfer_section(report_html, transfer_dir):
    """Copy a transfer check's outputs next to ``report_html`` (into ``transfer/``) and add its
    section (verdicts, summary per intensity band, figure) at the end of that page."""
    import html
    import shutil

    from .report_render import html_table

    check_transfer_dir(transfer_dir)
    report_html = Path(report_html)
    target = report_html.parent / "transfer"
    target.mkdir()
    for name in REPORTED_FILES:
        shutil.copy2(Path(transfer_dir) / name, target / name)
    verdicts = QTable.read(target / "verdicts.ecsv")
    summary = QTable.read(target / "summary.ecsv")
    comparison = ""
    if (Path(transfer_dir) / "comparison.ecsv").is_file():
        shutil.copy2(Path(transfer_dir) / "comparison.ecsv", target / "comparison.ecsv")
        comparison = ("<h3>Against the reference on the same real images</h3><p>Difference of"
                      " the metrics (lower is better), its paired bootstrap error and the"
                      " verdict (beyond twice the error).</p>"
                      + html_table(QTable.read(target / "comparison.ecsv")))
    images = QTable.read(target / "images.ecsv")
    files = images.meta.get("real_files", [])
    section = (
        "<h2>Transfer to real images</h2>"
        f"<p>{np.count_nonzero(images['selected'])} of {len(images)} real images"
        f" ({', '.join(html.escape(Path(f).name) for f in files)}) selected and compared with"
        " simulated test images of matched true energy and intensity (telescope-level"
        " results). Transfer ratio = real / expected error; a classifier's difference = real −"
        " expected misclassified fraction. Tables: <a href=\"transfer/verdicts.ecsv\">verdicts"
        "</a>, <a href=\"transfer/summary.ecsv\">per intensity band</a>,"
        " <a href=\"transfer/images.ecsv\">per image</a>.</p>"
        + html_table(verdicts)
        + comparison
        + "<h3>Per intensity band (p.e.)</h3>"
        + html_table(summary)
        + '<img src="transfer/transfer.png" alt="transfer check">'
    )
    page = report_html.read_text(encoding="utf-8")
    report_html.write_text(page.replace("</body>", section + "\n</body>"), encoding="utf-8")
