"""The performance report: metrics of every reconstructor found in simulated DL2 files.

``PerformanceReport`` reads the DL2 events (``dl2.py``) and puts the report together from its
parts, one job each:

- ``report_tables.py``: the metric tables per level (subarray events, and telescope events of
  each telescope type) and true-energy bin, the summary and the comparison with the reference
  reconstructors (those matching ``reference_prefixes``);
- ``offsets.py``: the subarray events resolved by source position in the field of view;
- ``irf.py``: the point-like effective area and sensitivity of each analysis chain, by
  ctapipe's IRF components, when the inputs allow it;
- ``camera_images.py``: the brightest camera images, read again from the files, with the
  predictions;
- ``report_figures.py``: the figures of those tables (drawn by ``plots.py``);
- ``report_render.py`` and ``templates/``: every figure written as PNG with an ECSV table of
  what it shows, and the HTML page collecting them.
"""
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import vstack
from ctapipe.core import Component
from ctapipe.core.traits import AstroQuantity, Bool, Int, List, Unicode

from . import report_figures, report_render
from .camera_images import select_camera_images
from .dl2 import DL2InputError, read_dl2_events
from .irf import PointLikeIRF
from .offsets import OffsetResolvedMetrics
from .report_tables import MetricTables

__all__ = ["PerformanceReport"]


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
    n_bootstrap = Int(
        200, min=20,
        help=(
            "bootstrap resamples of the events per energy bin for the error of each difference"
            " from the reference (the comparison's verdict: better or worse beyond twice it)"
        ),
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
            "point-like effective area and sensitivity of each analysis chain (ctapipe's IRF"
            " components, pyirf underneath), when the inputs allow it: see PointLikeIRF"
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
        self.tables = MetricTables(
            self.energy_bins, self.min_events, self.common_events,
            tuple(self.reference_prefixes), self.n_gammaness_bins, self.max_roc_points,
            self.n_bootstrap,
        )

    @property
    def energy_bins(self):
        decades = np.log10((self.energy_max / self.energy_min).to_value(u.one))
        n_bins = max(1, int(np.ceil(decades * self.bins_per_decade - 1e-9)))
        return np.geomspace(self.energy_min.to_value(u.TeV), self.energy_max.to_value(u.TeV),
                            n_bins + 1) * u.TeV

    def __call__(self, paths, output_dir):
        """Read ``paths``, compute every metric, write figures, tables and report.html.

        Returns the summary table (one row per level, property, reconstructor and metric).
        """
        samples = read_dl2_events(paths, telescope_level=self.telescope_level)
        self._check_particles(paths, next(iter(samples.values())))
        output_dir = Path(output_dir)
        sections, summaries, comparisons = [], [], []
        for sample in samples.values():
            results = self.tables(sample)
            summaries.append(results.pop("summary"))
            if "comparison" in results:
                comparisons.append(results.pop("comparison"))
            figures = report_figures.level_figures(results, sample.name,
                                                   self.tables.references(sample))
            sections.append(report_render.level_section(
                sample.name, report_render.write_figures(output_dir, figures)))
        summary = vstack(summaries)
        summary.write(output_dir / "summary.ecsv")
        comparison = vstack(comparisons) if comparisons else None
        if comparison is not None:
            comparison.write(output_dir / "comparison.ecsv")
        if self.offset_metrics and "subarray" in samples:
            sections.append(self._offsets_section(paths, samples["subarray"], output_dir))
        if self.point_like_irf:
            sections.append(self._irf_section(paths, samples.get("subarray"), output_dir))
        report_render.write_page(
            output_dir / "report.html", paths, summary, comparison, sections,
            self._camera_images_section(paths, samples, output_dir), self.min_events,
            self.common_events,
        )
        return summary

    def _check_particles(self, paths, sample):
        files = ", ".join(map(str, paths))
        if not np.any(sample.is_gamma):
            raise DL2InputError(f"no gamma events in {files}: the report measures the gamma "
                                "reconstruction; give a gamma file too")
        if np.all(sample.is_gamma):
            self.log.warning("no background events in %s: the AUC, ROC curves and gammaness "
                             "distributions cannot be computed; give a proton file too", files)

    def _offsets_section(self, paths, sample, output_dir):
        """The section of the metrics by source position (subarray events)."""
        used = {prop: self.tables.selections(sample, prop)[1]
                for prop in ("geometry", "particle_type")}
        return self.offsets.write_section(paths, sample, used, self.min_events,
                                          self.tables.references(sample), output_dir)

    def _irf_section(self, paths, subarray_sample, output_dir):
        """Cuts, effective area and sensitivity of the analysis chains; returns their section."""
        result = self.irf(paths, subarray_sample, self.energy_min, self.energy_max,
                          self.bins_per_decade, self.min_events)
        references = {chain.name for chain in result.chains
                      if all(self.tables.is_reference(p) for p in chain.prefixes)}
        cuts_file = None
        if result.cuts is not None:
            cuts_file = "irf_cuts.ecsv"
            result.cuts.write(output_dir / cuts_file)
        figures = report_figures.irf_figures(result, self.irf, references, self.energy_bins)
        return report_render.irf_section(result, self.irf, self.min_events, cuts_file,
                                         report_render.write_figures(output_dir, figures))

    def _camera_images_section(self, paths, samples, output_dir):
        if self.n_images == 0:
            return ""
        images, rows = select_camera_images(paths, samples, self.n_images)
        if not images:
            self.log.info("no DL1 images in the DL2 files: no camera image figure")
            return ""
        return report_render.write_camera_images(
            output_dir, report_figures.camera_image_figure(images, rows, self.image_hillas))
