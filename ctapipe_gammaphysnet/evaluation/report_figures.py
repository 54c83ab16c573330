"""The report's figures: which of ``plots.py`` show which metric table, with their titles.

Each function returns ``(stem, title, table, figure)`` tuples, the table being what the figure
shows; ``report_render.write_figures`` writes them.
"""
import numpy as np
from astropy.table import QTable

from . import plots

__all__ = ["camera_image_figure", "irf_figures", "level_figures"]


def level_figures(results, level, references):
    """The figures of one level's metric tables (``MetricTables`` results)."""
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
    return [(f"{name}_{level}", title, results[name], fig) for name, title, fig in figures]


def irf_figures(result, irf, references, energy_bins):
    """The effective area and sensitivity figures of ``result`` (a PointLikeIRF result)."""
    figures = []
    if result.effective_area is not None:
        area = result.effective_area
        figures.append(("effective_area", "Effective area after cuts vs true energy", area,
                        plots.plot_binned(
                            area, "effective_area",
                            f"effective area / {area['effective_area'].unit:latex_inline}",
                            references, "effective area after cuts (point-like gammas)",
                            log_y=True)))
    if result.sensitivity is not None:
        energy = np.geomspace(energy_bins[0], energy_bins[-1], 100)
        figures.append(("sensitivity",
                        f"Differential sensitivity vs reconstructed energy"
                        f" ({irf.observation_time})",
                        result.sensitivity, plots.plot_sensitivity(
                            result.sensitivity, references, energy,
                            irf.crab_energy_flux(energy), irf.gamma_target_spectrum.name)))
    return figures


def camera_image_figure(images, rows, hillas):
    """The camera images with their predictions (``camera_images.select_camera_images``)."""
    return [("camera_images", "camera images", QTable(rows=rows),
             plots.plot_camera_images(images, hillas=hillas))]
